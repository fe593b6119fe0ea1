"""Every patch that ParlAI 1.7.2 and Mephisto 1.1.1 need on today's stack (torch 2.13,
numpy 2, Python 3.11, offline machines): one module per module patched, each patch's
docstring naming the breakage it fixes (tests/test_compat.py shows each one is needed).

Nothing here edits site-packages: `registration` applies `PATCHES[name]` to a module right
after it loads (or at once, if it was loaded before), and compiles the few modules that
cannot even be imported as shipped from their source with `SOURCE_PATCHES[name]` applied.
Imported at interpreter start by the .pth hook: no module here imports anything heavy at
top level.
"""
from parlai_transfertransfo.plugin.compat.acceptability import fix_offensive_language_download
from parlai_transfertransfo.plugin.compat.convai2_agents import guard_convai2_teachers
from parlai_transfertransfo.plugin.compat.convai2_worlds import fix_convai2_personas_offline
from parlai_transfertransfo.plugin.compat.core_agents import (
    fix_missing_model_file_message, model_files_that_name_no_agent,
)
from parlai_transfertransfo.plugin.compat.crowdsourcing_mturk import fix_parlai_mturk_config_source
from parlai_transfertransfo.plugin.compat.distributed import fix_distributed, fix_distributed_on_cpu, fix_slurm_launch
from parlai_transfertransfo.plugin.compat.fsdp import fix_join_device_on_cpu
from parlai_transfertransfo.plugin.compat.logs import fix_tensorboard_logger
from parlai_transfertransfo.plugin.compat.lr_scheduler import fix_reduce_on_plateau
from parlai_transfertransfo.plugin.compat.mephisto_config_handler import fix_mephisto_config_at_import
from parlai_transfertransfo.plugin.compat.mephisto_dirs import fix_mephisto_data_dir_prompt
from parlai_transfertransfo.plugin.compat.mephisto_hydra_config import fix_mephisto_hydra_config_source
from parlai_transfertransfo.plugin.compat.mephisto_local_architect import fix_local_architect_server_dir
from parlai_transfertransfo.plugin.compat.mephisto_operator import fix_operator_metrics_port
from parlai_transfertransfo.plugin.compat.multiprocessing_train import fix_mp_train_default_world_size
from parlai_transfertransfo.plugin.compat.opt import safe_opt_files
from parlai_transfertransfo.plugin.compat.self_chat import fix_self_chat_script
from parlai_transfertransfo.plugin.compat.torch_generator_agent import fix_ddp_on_cpu
from parlai_transfertransfo.plugin.compat.teachers import shard_training_data_by_rank
from parlai_transfertransfo.plugin.compat.train_model import (
    atomic_resumable_train_loop, count_epochs_over_sharded_data, fix_train_model,
)

PATCHES = {
    # ParlAI on torch 2.13 and CPU-only machines
    "parlai.nn.lr_scheduler": fix_reduce_on_plateau,
    "parlai.utils.distributed": fix_distributed,  # fix_distributed_on_cpu + fix_slurm_launch
    "parlai.scripts.multiprocessing_train": fix_mp_train_default_world_size,
    "parlai.core.torch_generator_agent": fix_ddp_on_cpu,
    "parlai.utils.fsdp": fix_join_device_on_cpu,
    # one-line errors instead of tracebacks, offline data
    "parlai.core.agents": model_files_that_name_no_agent,  # + fix_missing_model_file_message
    "parlai.tasks.convai2.agents": guard_convai2_teachers,
    "parlai.core.logs": fix_tensorboard_logger,
    # trust: safe loading and resumable training (weights/safe_load.py, agent/checkpointing.py)
    "parlai.core.opt": safe_opt_files,
    "parlai.scripts.train_model": fix_train_model,  # + count_epochs_over_sharded_data
    # distributed training: each rank its own part of the data (distributed/)
    "parlai.core.teachers": shard_training_data_by_rank,
    # crowdsourcing: Mephisto 1.1.1 offline, several runs on one machine (crowdsourcing/)
    "mephisto.operations.config_handler": fix_mephisto_config_at_import,
    "mephisto.utils.dirs": fix_mephisto_data_dir_prompt,
    "mephisto.abstractions.architects.local_architect": fix_local_architect_server_dir,
    "mephisto.operations.operator": fix_operator_metrics_port,
    "parlai.crowdsourcing.utils.acceptability": fix_offensive_language_download,
    # self-chat (selfchat/)
    "parlai.tasks.convai2.worlds": fix_convai2_personas_offline,
    "parlai.scripts.self_chat": fix_self_chat_script,
}

SOURCE_PATCHES = {  # Python 3.11 rejects their dataclasses' mutable defaults at import
    "mephisto.operations.hydra_config": fix_mephisto_hydra_config_source,
    "parlai.crowdsourcing.utils.mturk": fix_parlai_mturk_config_source,
}

__all__ = ["PATCHES", "SOURCE_PATCHES", "fix_missing_model_file_message", "fix_distributed_on_cpu", "fix_slurm_launch",
           "atomic_resumable_train_loop", "count_epochs_over_sharded_data"] + [
    patch.__name__ for patch in (*PATCHES.values(), *SOURCE_PATCHES.values())
]
