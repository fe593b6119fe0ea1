"""Patches `parlai.scripts.train_model`; the breakage is named in each docstring."""


def atomic_resumable_train_loop(train_model):
    """ParlAI's TrainLoop writes `.trainstats` in place (a kill mid-write leaves broken JSON
    and the rerun dies in a JSONDecodeError traceback) and after the model file (a kill
    between the two resumes with the update count of one save and the epochs and best
    validation of the previous one). Write it atomically, keep a copy inside each model file
    the agent saves, and resume from that copy (see agent/checkpointing.py)."""
    from parlai_transfertransfo.agent import checkpointing
    from parlai_transfertransfo.weights.atomic_files import write_json

    loop = train_model.TrainLoop
    init, save_model = loop.__init__, loop.save_model

    def __init__(self, opt):
        init(self, opt)
        checkpointing.resume(self)

    def save_model_with_stats(self, suffix=None):
        agent = getattr(self, "agent", None)
        if agent is not None:
            agent.pending_trainstats = checkpointing.train_stats(self)
        try:
            save_model(self, suffix)
        finally:
            if agent is not None:
                agent.pending_trainstats = None

    def _save_train_stats(self, suffix=None):
        from parlai.utils.distributed import is_primary_worker

        fn = self.opt.get("model_file")
        if not is_primary_worker() or not fn:
            return
        write_json(fn + (suffix or "") + ".trainstats", checkpointing.train_stats(self), indent=4)

    loop.__init__ = __init__
    loop.save_model = save_model_with_stats
    loop._save_train_stats = _save_train_stats
