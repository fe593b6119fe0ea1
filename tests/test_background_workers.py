"""The host side of training: observe builds each example's instances (so that ParlAI's
`--num-workers` moves that work to worker processes), and the step only assembles them,
into exactly the tensors it built itself before; `train_model --num-workers 2` trains."""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.kill_resume import first_dialogs
from test_agent import CONVAI2_800, make_agent

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")


def training_batch(agent, n, with_candidates=True):
    from parlai.core.message import Message
    from parlai.core.teachers import create_task_agent_from_taskname
    from parlai.core.params import ParlaiParser

    opt = ParlaiParser(True, False).parse_args(["-t", "convai2_file", "--convai2-file", CONVAI2_800,
                                                "--valid-split", "0", "-dt", "train:ordered"])
    teacher = create_task_agent_from_taskname(opt)[0]
    observed = []
    for _ in range(n):
        msg = Message(teacher.act())
        if not with_candidates:
            msg.pop("label_candidates", None)
        observed.append(agent.observe(msg))
        agent.self_observe({})
    return agent.batchify(observed), observed


@pytest.mark.parametrize("options", [[], ["--personality-permutations", "3"], ["--mc-coef", "0"]],
                         ids=["recipe", "3 permutations", "no mc loss"])
def test_instances_built_in_observe_are_the_ones_the_step_builds(options, tiny_gpt2_dir, tmp_path):
    from parlai_transfertransfo.agent import instances

    agent = make_agent(tiny_gpt2_dir, tmp_path, "--num-candidates", "4", *options)
    agent.is_training = True
    batch, observed = training_batch(agent, 12)
    assert all(batch.tt_instances)  # built in observe
    with_mc = agent.opt["mc_coef"] > 0
    assembled, layout = instances.recipe_batch(agent, batch, with_mc)
    # the step building every instance itself, from the label candidates, as it did before
    batch.tt_instances = None
    built, built_layout = instances.recipe_batch(agent, batch, with_mc)
    assert torch.equal(layout, built_layout)
    assert len(assembled) == len(built) == 8
    for got, want in zip(assembled, built):
        assert torch.equal(got, want)


def test_examples_without_candidates_still_take_their_distractors_from_the_batch(tiny_gpt2_dir, tmp_path):
    from parlai_transfertransfo.agent import instances

    agent = make_agent(tiny_gpt2_dir, tmp_path, "--num-candidates", "3")
    agent.is_training = True
    batch, _ = training_batch(agent, 6, with_candidates=False)
    assert batch.tt_instances == [None] * 6
    inputs, layout = instances.recipe_batch(agent, batch, True)
    assert layout.shape == (6, 3) and bool((layout >= 0).all())  # two distractors each, from the batch


def test_train_model_with_background_workers(tiny_gpt2_dir, tmp_path):
    dialogs = first_dialogs(6, tmp_path / "six.txt")
    common = ["train_model", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir, "-t", "convai2_file",
              "--convai2-file", dialogs, "--valid-split", 1, "-mf", tmp_path / "model", "--datapath", tmp_path / "data",
              "-bs", 4, "--max-train-steps", 6, "--log-every-n-steps", 3, "--skip-generation", "true",
              "--num-workers", 2]
    run = subprocess.run([PARLAI, *map(str, common)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "transfertransfo: --num-workers 2 batches by length in worker processes and needs a context cap: "
        "add --text-truncate N (e.g. 512, or the model's positions)")
    run = subprocess.run([PARLAI, *map(str, common), "--text-truncate", "128"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    train = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{") and '"mc_loss"' in l]
    assert train and all(r["mc_loss"] > 0 and r["total_train_updates"] > 0 for r in train)
    assert os.path.exists(tmp_path / "model")
