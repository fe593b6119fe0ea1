"""What a distributed launch checks before any rank trains: each mistake is one line.

ParlAI's own launchers fail late and far from the cause (a world size that does not match
the processes launched is an NCCL "invalid argument", a busy port a traceback from the
store, NCCL on a machine without GPUs a CUDA error), so the launch checks them first.
"""
import ctypes
import datetime
import os
import signal
import socket

from parlai_transfertransfo.errors import TransfertransfoError

DEFAULT_TIMEOUT_S = 300  # a rank that died: the others give up on a collective after this


class DistributedSetupError(TransfertransfoError):
    """A launch that cannot work, said in one line before anything starts."""


def torchrun_environment(env=os.environ):
    """(rank, world_size, local_rank) from torchrun's variables, or one line without them."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in env]
    if missing:
        raise DistributedSetupError(
            f"{', '.join(missing)} not set: start it with torchrun (torchrun --nproc-per-node P -m "
            "parlai_transfertransfo.distributed train_model ...)"
        )
    try:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    except ValueError:
        raise DistributedSetupError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None


def world_size(asked, launched, launcher):
    """--distributed-world-size must match the processes the launcher started (or be absent)."""
    if asked is not None and asked != launched:
        raise DistributedSetupError(
            f"--distributed-world-size {asked} but {launcher} started {launched} "
            f"{'process' if launched == 1 else 'processes'}: "
            f"drop the option or pass {launched}"
        )
    return launched


def backend(asked, cuda_available, no_cuda):
    """'nccl' (GPUs) or 'gloo' (CPUs) for --distributed-backend auto|nccl|gloo."""
    on_gpu = cuda_available and not no_cuda
    if asked == "nccl" and not on_gpu:
        reason = "--no-cuda is set" if cuda_available else "this machine has no GPU"
        raise DistributedSetupError(f"--distributed-backend nccl needs GPUs and {reason}: use gloo")
    if asked == "auto":
        return "nccl" if on_gpu else "gloo"
    return asked


def timeout(opt):
    """How long a rank waits on a collective before it gives up (a peer died)."""
    seconds = opt.get("distributed_timeout") or int(os.environ.get("TRANSFERTRANSFO_DISTRIBUTED_TIMEOUT", 0) or 0)
    return datetime.timedelta(seconds=seconds or DEFAULT_TIMEOUT_S)


def port_free(host, port):
    """One line when the main process's port is taken (checked by the rank that binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host if host not in ("localhost",) else "127.0.0.1", port))
        except OSError:
            raise DistributedSetupError(f"port {port} is in use on {host}: pass another --port") from None


def die_with_launcher():
    """torchrun starts each rank in a session of its own: a launcher killed with SIGKILL
    (a scheduler's preemption, a user's kill -9) leaves its ranks training on, orphaned,
    still writing checkpoints under the next run. Have the kernel kill this rank when its
    launcher dies (Linux's PR_SET_PDEATHSIG); the atomic saves keep the files whole."""
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not Linux
        return
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
