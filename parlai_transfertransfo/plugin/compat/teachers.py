"""Patches `parlai.core.teachers`; the breakage is named in the docstring."""


def shard_training_data_by_rank(teachers):
    """In distributed training every rank of ParlAI 1.7.2 loads the whole training set:
    with `train:ordered` all ranks train on the same batches (W times the work for one
    rank's worth of data), and without a seed each samples the whole set independently.
    Give each rank its own part instead, in blocks of `--batchsize` episodes (episode i
    goes to rank (i // bs) % W), so that W ranks at -bs B step through what one process
    steps through at -bs B with --update-freq W. Evaluation keeps ParlAI's own sharding.
    train_model.py's patch counts epochs over the whole set accordingly."""
    load = teachers.DialogData._load

    def _load(self, data_loader, datafile):
        load(self, data_loader, datafile)
        from parlai.utils.distributed import get_rank, is_distributed, num_workers

        if not is_distributed() or self.is_distributed_and_is_eval:
            return
        opt = getattr(self, "_shard_opt", None) or {}
        if "train" not in opt.get("datatype", "train"):
            return
        bs, world, rank = max(1, int(opt.get("batchsize") or 1)), num_workers(), get_rank()
        episodes = self.data
        teachers.training_data_sharded = True  # train_model.py's patch reads it
        self.data = [ep for i, ep in enumerate(episodes) if (i // bs) % world == rank]
        if not self.data:
            raise SystemExit(
                f"rank {rank}: the training data has {len(episodes)} episodes, fewer than "
                f"--batchsize {bs} x {world} ranks: lower -bs or the number of processes"
            )

    init = teachers.DialogData.__init__

    def __init__(self, opt, *args, **kwargs):
        self._shard_opt = opt
        init(self, opt, *args, **kwargs)

    teachers.DialogData._load = _load
    teachers.DialogData.__init__ = __init__
