"""Patches `parlai.nn.lr_scheduler`; the breakage is named in each docstring."""


def fix_reduce_on_plateau(lr_scheduler):
    """torch >= 2.7 removed `ReduceLROnPlateau(verbose=...)`, which ParlAI's default
    `--lr-scheduler reduceonplateau` passes: `TypeError: ... unexpected keyword argument
    'verbose'` as soon as any agent builds its optimizer."""
    from torch import optim

    def __init__(self, optimizer, patience, decay, warmup_updates, warmup_rate):
        lr_scheduler.ParlAILRScheduler.__init__(self, warmup_updates, warmup_rate)
        self.scheduler = optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, "min", factor=decay, patience=patience
        )

    lr_scheduler.ReduceOnPlateauLRScheduler.__init__ = __init__
