"""`python -m parlai_transfertransfo.distributed train_model ...` under torchrun.

torchrun starts the processes and owns the rendezvous (its store on MASTER_ADDR:MASTER_PORT);
each process joins it through `env://` and runs ParlAI's JoinableTrainLoop, as ParlAI's
`multiprocessing_train` runs each of its workers. Rank 0 writes the one model file.
"""
import sys

from parlai_transfertransfo.distributed import checks

SCRIPTS = ("train_model",)


def setup_args():
    """train_model's options, ParlAI's distributed ones, and ours."""
    from parlai.scripts.train_model import setup_args as train_args

    parser = train_args()
    parser.add_distributed_training_args()
    group = parser.add_argument_group("Distributed launch (torchrun)")
    group.add_argument("--distributed-backend", choices=["auto", "nccl", "gloo"], default="auto",
                       help="auto: NCCL on GPUs, gloo on CPUs")
    group.add_argument("--distributed-timeout", type=int, default=checks.DEFAULT_TIMEOUT_S,
                       help="seconds a rank waits on the others before it stops (a rank died)")
    return parser


def parse(argv):
    """(opt, local_rank) for this rank, every launch mistake one line."""
    import torch

    if not argv or argv[0] not in SCRIPTS:
        raise checks.DistributedSetupError(
            f"usage: torchrun ... -m parlai_transfertransfo.distributed {'|'.join(SCRIPTS)} [options]"
        )
    rank, world, local_rank = checks.torchrun_environment()
    opt = setup_args().parse_args(argv[1:])
    opt["distributed_world_size"] = checks.world_size(opt.get("distributed_world_size"), world, "torchrun")
    backend = checks.backend(opt["distributed_backend"], torch.cuda.is_available(), opt.get("no_cuda"))
    if backend == "gloo":
        opt["no_cuda"] = True  # ParlAI's distributed_context (plugin/compat) then takes gloo
    return opt, rank, local_rank


def train(opt, rank, local_rank):
    """ParlAI's training loop on this rank, joined to the others through env://."""
    import parlai.utils.distributed as distributed_utils
    import parlai.utils.fsdp as fsdp_utils

    gpu = None if opt.get("no_cuda") else local_rank
    with distributed_utils.distributed_context(rank, opt, 0, gpu, init_method="env://") as opt:
        opt["multiprocessing"] = True
        loop = fsdp_utils.JoinableTrainLoop(opt)
        with fsdp_utils.fsdp_join(loop):
            return loop.train()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    checks.die_with_launcher()
    try:
        opt, rank, local_rank = parse(argv)
        return train(opt, rank, local_rank)
    except checks.DistributedSetupError as err:
        raise SystemExit(f"parlai_transfertransfo.distributed: {err}") from None
