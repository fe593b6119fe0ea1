"""Patches `parlai.core.torch_generator_agent`; the breakage is named in each docstring."""


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
