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


def count_epochs_over_sharded_data(train_model):
    """With the training data split across ranks (teachers.py), ParlAI's epoch count, the
    sum of each rank's passes over what it holds (or W times one rank's), counts each
    global pass W times: `--num-epochs 1` stopped after 1/W of the data. Count passes over
    the whole set, and examples of the whole set (`total_exs`, from `world.num_examples()`)."""
    from parlai.utils.distributed import is_distributed, num_workers

    get_time = train_model.TrainLoop._get_time

    def _get_time(self, world):
        times = get_time(self, world)
        import parlai.core.teachers as teachers

        if is_distributed() and getattr(teachers, "training_data_sharded", False):
            self._total_epochs = self._preempted_epochs + (self._total_epochs - self._preempted_epochs) / num_workers()
            if not getattr(world, "_transfertransfo_global_examples", False):
                local = world.num_examples
                world.num_examples = lambda: local() * num_workers()
                world._transfertransfo_global_examples = True
        return times

    train_model.TrainLoop._get_time = _get_time


def fix_train_model(train_model):
    """ParlAI's TrainLoop writes `.trainstats` in place and after the model file, so a kill
    leaves broken or stale statistics (`atomic_resumable_train_loop`), and counts W passes
    for every pass over data split across W ranks (`count_epochs_over_sharded_data`)."""
    atomic_resumable_train_loop(train_model)
    count_epochs_over_sharded_data(train_model)
