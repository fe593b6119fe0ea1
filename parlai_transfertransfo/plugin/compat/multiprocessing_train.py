"""Patches `parlai.scripts.multiprocessing_train`; the breakage is named in each docstring."""


def fix_mp_train_default_world_size(mp_train):
    """`parlai multiprocessing_train` defaults `--distributed-world-size` to
    `torch.cuda.device_count()`, which is 0 without a GPU and makes it spawn -1
    processes; default to 2 CPU workers instead."""
    import torch

    if torch.cuda.is_available():
        return
    setup_args = mp_train.setup_args

    def setup_args_cpu():
        parser = setup_args()
        parser.set_defaults(distributed_world_size=2)
        return parser

    mp_train.setup_args = setup_args_cpu
