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
            with cuda_context(rank, opt, rank_offset, gpu, init_method) as new_opt, _one_line_if_a_rank_dies(rank + rank_offset):
                yield new_opt
            return
        from parlai.utils import logging

        from parlai_transfertransfo.distributed import checks

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
                timeout=checks.timeout(opt),
            )
            logging.info("Distributed group initialized (gloo, CPU)")
            torch.manual_seed(42)
            try:
                with _one_line_if_a_rank_dies(rank):
                    distributed.sync_object(None)
                    yield opt
            finally:
                _release_ddp_reducers()
                dist.destroy_process_group()

    distributed.distributed_context = distributed_context


def _release_ddp_reducers():
    """ParlAI's launchers (torchrun's, `multiprocessing_train`'s, SLURM's `distributed_train`)
    keep the training loop, and the DDP model's reducer with it, alive after the context
    destroys the process group. Destructed later, the gloo group hung on a lock in
    `~ProcessGroupGloo` or aborted the rank ("terminate called without an active exception")
    once training had ended: drop every DDP wrapper's reducer (and the logger holding it)
    while the group is alive. Training is over; the wrapped modules stay usable alone."""
    import gc

    from torch.nn.parallel import DistributedDataParallel

    for obj in gc.get_objects():
        if isinstance(obj, DistributedDataParallel):
            for name in ("logger", "reducer"):
                obj.__dict__.pop(name, None)
    gc.collect()


@contextlib.contextmanager
def _one_line_if_a_rank_dies(rank):
    """A rank that died leaves the others failing (or timing out) in a collective, with a
    traceback from deep inside torch each: stop with one line instead."""
    import torch.distributed as dist

    try:
        yield
    except (getattr(dist, "DistError", RuntimeError), RuntimeError) as err:
        text = str(err)
        if isinstance(err, getattr(dist, "DistError", ())) or any(
            marker in text for marker in ("Connection closed by peer", "Connection reset", "Timed out", "timed out",
                                          "gloo", "NCCL", "Socket Timeout")
        ):
            first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
            raise SystemExit(f"rank {rank}: stopped: another rank stopped or is unreachable ({first[:160]})") from None
        raise


def fix_slurm_launch(distributed):
    """`python -m parlai.scripts.distributed_train` under SLURM: `--distributed-world-size`
    has no default (a missing one is a TypeError in `init_process_group`, a wrong one an NCCL
    "invalid argument"), `scontrol` missing is reported as "SLURM not installed" with a
    traceback, and a busy `--port` is a store traceback. Take the world size from
    SLURM_NTASKS, check it, and say each mistake in one line (gloo on CPU nodes comes from
    `fix_distributed_on_cpu`)."""
    import os
    import socket

    slurm_context = distributed.slurm_distributed_context

    @contextlib.contextmanager
    def slurm_distributed_context(opt):
        from parlai_transfertransfo.distributed import checks

        try:
            if "SLURM_JOB_NODELIST" not in os.environ:
                raise checks.DistributedSetupError(
                    "SLURM_JOB_NODELIST is not set: run it under srun (or use torchrun: python -m "
                    "parlai_transfertransfo.distributed)"
                )
            tasks = os.environ.get("SLURM_NTASKS")
            if tasks is None:
                raise checks.DistributedSetupError("SLURM_NTASKS is not set: run it under srun --ntasks N")
            opt["distributed_world_size"] = checks.world_size(opt.get("distributed_world_size"), int(tasks), "SLURM")
            if int(os.environ.get("SLURM_PROCID", -1)) == 0:
                import subprocess

                try:
                    hosts = subprocess.check_output(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]])
                except FileNotFoundError:
                    raise checks.DistributedSetupError("scontrol is not on PATH: run it under srun on a SLURM node") from None
                main_host = hosts.split()[0].decode("utf-8")
                if main_host in ("localhost", "127.0.0.1", socket.gethostname()):
                    checks.port_free(main_host, opt["port"])
        except checks.DistributedSetupError as err:
            raise SystemExit(f"parlai distributed_train: {err}") from None
        with slurm_context(opt) as new_opt:
            yield new_opt

    distributed.slurm_distributed_context = slurm_distributed_context


def fix_distributed(distributed):
    """`parlai.utils.distributed` as shipped dies on a machine without a GPU (NCCL and CUDA
    hard-coded: `fix_distributed_on_cpu`) and under SLURM needs a world size it has no
    default for, reporting mistakes as tracebacks (`fix_slurm_launch`): both fixes."""
    fix_distributed_on_cpu(distributed)
    fix_slurm_launch(distributed)
