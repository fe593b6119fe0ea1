"""Patches `parlai.utils.distributed`; the breakage is named in each docstring."""

import contextlib
import copy


def fix_distributed_on_cpu(distributed):
    """ParlAI's `distributed_context` hard-codes the NCCL backend, divides the rank by
    `torch.cuda.device_count()` and calls `torch.cuda.init()`, and `all_gather_list`
    (behind `sync_object`) builds CUDA tensors: `parlai multiprocessing_train` dies with
    ZeroDivisionError on a machine without a GPU.  With no GPU, use the gloo backend and
    torch's CPU object collectives; with GPUs, ParlAI's own code."""
    import torch
    import torch.distributed as dist

    cuda_all_gather_list = distributed.all_gather_list

    def all_gather_list(data):
        if distributed.is_distributed() and dist.get_backend() == "gloo":
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, data)
            return gathered
        return cuda_all_gather_list(data)

    distributed.all_gather_list = all_gather_list

    cuda_context = distributed.distributed_context

    @contextlib.contextmanager
    def distributed_context(rank, opt, rank_offset=0, gpu=None, init_method="tcp://localhost:61337"):
        if torch.cuda.is_available() and not opt.get("no_cuda"):
            with cuda_context(rank, opt, rank_offset, gpu, init_method) as new_opt:
                yield new_opt
            return
        from parlai.utils import logging

        opt = copy.deepcopy(opt)
        rank = rank + rank_offset
        opt["rank"] = rank
        opt["gpu"] = -1
        opt["no_cuda"] = True
        opt.setdefault("override", {})
        opt["override"]["gpu"] = -1
        opt["override"]["no_cuda"] = True
        verbose = opt.get("verbose")
        prefix = "rank:{:3d} |".format(rank) if verbose or rank != 0 else None
        with distributed.override_print(not verbose and rank != 0, prefix):
            dist.init_process_group(
                backend="gloo",
                init_method=init_method,
                world_size=opt["distributed_world_size"],
                rank=rank,
            )
            logging.info("Distributed group initialized (gloo, CPU)")
            torch.manual_seed(42)
            distributed.sync_object(None)
            try:
                yield opt
            finally:
                dist.destroy_process_group()

    distributed.distributed_context = distributed_context
