"""Every patch that ParlAI 1.7.2 needs on today's stack (torch 2.13, numpy 2, ...).

Nothing here edits site-packages: each patch is a function of the freshly imported ParlAI
module, applied by `registration` right after that module loads (or at once, if it was
loaded before).  Each names the breakage it fixes; tests/test_compat.py shows each one is
needed.  This module imports nothing heavy at top level: it is imported at interpreter
start by the .pth hook.
"""
import contextlib
import copy


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


def fix_ddp_on_cpu(tga):
    """TorchGeneratorAgent wraps its model in DistributedDataParallel with
    `device_ids=[opt['gpu']]`, which is [-1] without a GPU: torch raises "device_ids ...
    only work with ... GPU modules" in every `multiprocessing_train` worker.  CPU modules
    need device_ids=None; pass that while the agent is built on CPU."""
    import torch
    from parlai.utils.distributed import is_distributed

    ddp = torch.nn.parallel.DistributedDataParallel

    class CpuDistributedDataParallel(ddp):
        def __init__(self, module, device_ids=None, *args, **kwargs):
            super().__init__(module, None if device_ids == [-1] else device_ids, *args, **kwargs)

    init = tga.TorchGeneratorAgent.__init__

    def __init__(self, opt, shared=None):
        on_gpu = torch.cuda.is_available() and not opt.get("no_cuda")
        if shared is not None or not is_distributed() or on_gpu:
            return init(self, opt, shared)
        torch.nn.parallel.DistributedDataParallel = CpuDistributedDataParallel
        try:
            init(self, opt, shared)
        finally:
            torch.nn.parallel.DistributedDataParallel = ddp

    tga.TorchGeneratorAgent.__init__ = __init__


def fix_join_device_on_cpu(fsdp):
    """`multiprocessing_train`'s joinable train loop and evaluator report `opt['gpu']` as
    their join device, which is -1 without a GPU: "Device index must not be negative"
    when the workers finish.  Report the CPU instead."""

    def cpu_when_no_gpu(prop):
        return property(lambda self: "cpu" if prop.fget(self) == -1 else prop.fget(self))

    for cls in (fsdp.JoinableTrainLoop, fsdp.JoinableEvaluator):
        cls.join_device = cpu_when_no_gpu(cls.join_device)


def fix_missing_model_file_message(agents):
    """`parlai eval_model` / `interactive` with a `--model-file` that does not exist end
    in a RuntimeError traceback ("WARNING: Model file does not exist"): say it in one
    line instead."""
    create_agent = agents.create_agent

    def create_agent_checked(opt, requireModelExists=False):
        try:
            return create_agent(opt, requireModelExists)
        except RuntimeError as err:
            if "Model file does not exist" not in str(err):
                raise
            raise SystemExit(
                f"parlai: the model file {opt.get('model_file')} does not exist: check "
                "--model-file (zoo models are named like zoo:transfertransfo/<entry>/model)"
            ) from None

    agents.create_agent = create_agent_checked


def guard_convai2_teachers(agents):
    """ParlAI's convai2 teachers retry a download that cannot work offline (~15 s) and
    then raise a traceback; a variant whose file is not installed dies with
    FileNotFoundError.  Both become one line that says how to install the files
    (`parlai install_convai2`)."""
    from parlai_transfertransfo.data.convai2 import guard_convai2_teachers as guard

    guard(agents)


PATCHES = {
    "parlai.nn.lr_scheduler": fix_reduce_on_plateau,
    "parlai.utils.distributed": fix_distributed_on_cpu,
    "parlai.scripts.multiprocessing_train": fix_mp_train_default_world_size,
    "parlai.core.agents": fix_missing_model_file_message,
    "parlai.core.torch_generator_agent": fix_ddp_on_cpu,
    "parlai.utils.fsdp": fix_join_device_on_cpu,
    "parlai.tasks.convai2.agents": guard_convai2_teachers,
}


# ------------------------------------------------------------------ self-chat (issue 12)
def fix_convai2_personas_offline(worlds):
    """ParlAI's convai2 self-chat and interactive worlds take their personas from ConvAI2's
    training file (`train_both_original.txt`), downloading ConvAI2 first: offline,
    `parlai self_chat -t convai2` stops with a download error.  Without the installed file,
    serve the packaged PERSONA-CHAT training personas (the same personas), no download."""
    from parlai_transfertransfo.selfchat.personas import convai2_personas

    parlai_load_personas = worlds._load_personas
    worlds._load_personas = lambda opt: convai2_personas(opt, parlai_load_personas)


def fix_self_chat_script(self_chat):
    """ParlAI 1.7.2's `parlai self_chat` asserts `-bs 1` (an AssertionError traceback for
    any other batch size), dies with AttributeError on a `--partner-model-file` that does not
    exist, and loads the partner outside `--datapath`.  Run it as `selfchat.script` does:
    options checked in one line each, the partner under `--datapath`, `-bs N` chats batched."""
    from parlai_transfertransfo.selfchat.script import self_chat as checked_batched_self_chat

    self_chat.self_chat = checked_batched_self_chat


PATCHES["parlai.tasks.convai2.worlds"] = fix_convai2_personas_offline
PATCHES["parlai.scripts.self_chat"] = fix_self_chat_script
