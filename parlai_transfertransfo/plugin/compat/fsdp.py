"""Patches `parlai.utils.fsdp`; the breakage is named in each docstring."""


def fix_join_device_on_cpu(fsdp):
    """`multiprocessing_train`'s joinable train loop and evaluator report `opt['gpu']` as
    their join device, which is -1 without a GPU: "Device index must not be negative"
    when the workers finish.  Report the CPU instead."""

    def cpu_when_no_gpu(prop):
        return property(lambda self: "cpu" if prop.fget(self) == -1 else prop.fget(self))

    for cls in (fsdp.JoinableTrainLoop, fsdp.JoinableEvaluator):
        cls.join_device = cpu_when_no_gpu(cls.join_device)
