"""Each ParlAI-1.7.2 patch in plugin/compat/: the breakage is real and the patch fixes it."""
import inspect

import pytest
import torch

from parlai_transfertransfo.plugin import compat, registration

registration.install()


def test_patches_are_applied_when_parlai_modules_load():
    import parlai.nn.lr_scheduler as lr_scheduler
    import parlai.scripts.multiprocessing_train as mp_train
    import parlai.utils.distributed as distributed

    for module in (lr_scheduler, distributed, mp_train):
        assert module._transfertransfo_compat is True


def test_default_reduceonplateau_scheduler_builds_on_torch_2_13():
    from parlai.nn.lr_scheduler import ReduceOnPlateauLRScheduler

    # the breakage: torch >= 2.7 rejects the `verbose` argument ParlAI passes
    with pytest.raises(TypeError, match="verbose"):
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), verbose=True
        )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = ReduceOnPlateauLRScheduler(optimizer, patience=0, decay=0.5, warmup_updates=0, warmup_rate=1e-4)
    sched.valid_step({"loss": 1.0})
    sched.valid_step({"loss": 2.0})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_distributed_context_uses_gloo_without_a_gpu():
    import parlai.utils.distributed as distributed
    from parlai.utils.distributed import find_free_port

    assert not torch.cuda.is_available()
    opt = {"distributed_world_size": 1, "verbose": False}
    init = f"tcp://localhost:{find_free_port()}"
    with distributed.distributed_context(0, opt, init_method=init) as worker_opt:
        assert torch.distributed.get_backend() == "gloo"
        assert torch.distributed.get_world_size() == 1
        assert worker_opt["gpu"] == -1 and worker_opt["rank"] == 0
    assert not torch.distributed.is_initialized()


def test_original_distributed_context_breaks_without_a_gpu():
    import parlai.utils.distributed as distributed

    # ParlAI's own context, kept as the fallback for GPU machines
    original = inspect.getclosurevars(distributed.distributed_context.__wrapped__).nonlocals["cuda_context"]
    with pytest.raises(ZeroDivisionError):
        with original(0, {"distributed_world_size": 1}):
            pass


def test_multiprocessing_train_defaults_to_two_cpu_workers():
    import parlai.scripts.multiprocessing_train as mp_train

    opt = mp_train.setup_args().parse_args(["-t", "integration_tests", "-m", "repeat_label"])
    assert opt["distributed_world_size"] == 2


def test_every_patch_names_the_breakage_it_fixes():
    for name, patch in compat.PATCHES.items():
        assert name.startswith(("parlai.", "mephisto."))
        assert patch.__doc__ and len(patch.__doc__.split()) > 15, name
