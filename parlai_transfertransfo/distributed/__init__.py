"""Training on several processes and machines, ending in ParlAI's own training loop.

    torchrun --nnodes N --nproc-per-node P --node-rank R --master-addr A --master-port PORT \\
        -m parlai_transfertransfo.distributed train_model -m transfertransfo ...

torchrun.py reads torchrun's `env://` variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), checks them against the options (checks.py, one line each) and runs ParlAI's
JoinableTrainLoop inside ParlAI's `distributed_context` (gloo on CPU, NCCL on GPU). SLURM
runs ParlAI's own `python -m parlai.scripts.distributed_train`, with the fixes in
plugin/compat/distributed.py (world size from SLURM_NTASKS, gloo on CPU nodes, one-line
errors). docs/training.md#train-at-scale has both launches.

An app: may import the agent, weights, data and the recipe. Never the plugin.
"""
