"""Patches `parlai.core.logs`; the breakage is named in each docstring."""


def fix_tensorboard_logger(logs):
    """`-tblog true` (train_model, eval_model): ParlAI's TensorboardLogger raises an
    ImportError traceback when tensorboardX is missing, and an OSError traceback when its
    log directory cannot be created or written.  Both become one line."""
    init = logs.TensorboardLogger.__init__

    def __init__(self, opt):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise SystemExit(
                "parlai: -tblog true needs TensorBoard: run ./install.sh tensorboard "
                "(or pip install tensorboardX tensorboard)"
            ) from None
        logdir = opt.get("tensorboard_logdir") or f"{opt.get('model_file')}.tensorboard"
        try:
            init(self, opt)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise SystemExit(
                f"parlai: cannot write TensorBoard logs to {logdir} ({reason}): choose another "
                "--tensorboard-logdir"
            ) from None

    logs.TensorboardLogger.__init__ = __init__
