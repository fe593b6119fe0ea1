"""Killed training loses no more than the work since the last checkpoint.

The real thing first: `parlai train_model` killed with SIGKILL (at a random moment, then in
the middle of a save), rerun, every invariant checked after each kill
(benchmarks/kill_resume.py; README has the figures of its larger runs). Then, in this
process, the cases a random kill rarely hits: statistics one save behind the model file,
a best model newer than the checkpoint, a run killed after its last update.
"""
import json
import os
import shutil

import pytest
import torch

from benchmarks.kill_resume import kill_resume
from conftest import TEST_DATA
from parlai_transfertransfo.weights import atomic_files
from parlai_transfertransfo.weights.safe_load import load_states

SAVED = os.path.join(TEST_DATA, "trust", "saved_before_safe_loading")


def test_train_model_killed_twice_resumes_from_its_checkpoint_each_time(tmp_path):
    # kills land within 1 s of a run's first save: on an idle machine the whole 16-step run
    # takes a few seconds, and a kill drawn later would find it finished
    summary = kill_resume("train_model", kills=2, steps=16, work=str(tmp_path), seed=1, window=1.0)
    # the second kill waits for a save in progress, which a fast run may finish without
    assert summary["kills"] >= 1 and summary["kills"] + summary["finished_early"] == 2, summary
    assert summary["resumed"] >= 1 and summary["final_train_steps"] in (15, 16)


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "model"
    with atomic_files.atomic_file(str(path)) as tmp:
        torch.save({"model": {"w": torch.ones(2)}}, tmp)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_files.atomic_file(str(path)) as tmp:
            open(tmp, "wb").write(b"half a mod")
            raise RuntimeError("disk full")
    assert torch.equal(load_states(str(path))["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model"]  # no temporary file left behind
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~atomic_files.UMASK)


@pytest.fixture
def run(tmp_path):
    """The committed tiny model, as a run to resume: (opt for TrainLoop, model file)."""
    from benchmarks.kill_resume import first_dialogs
    from parlai.scripts.train_model import setup_args

    folder = tmp_path / "run"
    shutil.copytree(SAVED, folder)
    model_file = str(folder / "model")
    dialogs = first_dialogs(3, tmp_path / "three.txt")
    opt = setup_args().parse_args([str(a) for a in [
        "-m", "transfertransfo", "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 1,
        "-mf", model_file, "--datapath", tmp_path / "data", "-bs", 4, "--skip-generation", "true",
        "--validation-metric", "hits@1", "--max-train-steps", 7, "--short-final-eval", "true",
    ]])
    return opt, model_file


def loop_for(opt):
    from parlai.scripts.train_model import TrainLoop

    return TrainLoop(opt.copy())


def test_resume_reads_progress_from_the_checkpoint_not_a_lagging_trainstats(run):
    """A kill between the checkpoint and its .trainstats left the statistics one save behind."""
    opt, model_file = run
    loop = loop_for(opt)
    assert (loop._train_steps, loop.agent._number_training_updates) == (7, 7)  # from the old files
    loop.best_valid = 0.5
    loop.save_model(".checkpoint")  # now with the statistics inside the checkpoint
    with open(model_file + ".checkpoint.trainstats", "w") as f:
        json.dump({"parleys": 3, "train_steps": 3, "total_epochs": 0.5, "best_valid": None}, f)
    resumed = loop_for(opt)
    assert (resumed._train_steps, resumed.parleys, resumed.best_valid) == (7, 7, 0.5)
    assert resumed.agent._number_training_updates == 7


def test_resume_keeps_the_better_best_model_saved_after_the_checkpoint(run):
    """Killed between saving a new best model and the checkpoint after it: the resumed run
    must not overwrite that model with a worse one."""
    opt, model_file = run
    loop = loop_for(opt)
    loop.best_valid = 0.5
    loop.save_model(".checkpoint")
    loop.best_valid = 0.8
    loop.save_model()  # the best model, newer than the checkpoint
    resumed = loop_for(opt)
    assert resumed.best_valid == 0.8 and resumed.saved


def test_a_run_killed_after_its_last_update_takes_no_more(run):
    """ParlAI trains one step before checking its limits: a finished run, rerun, would take
    one update more and save it over the best model."""
    opt, model_file = run
    loop = loop_for(opt)
    loop.best_valid = 0.5
    loop.save_model(".checkpoint")
    loop.save_model()
    best_before = load_states(model_file)["model"]
    resumed = loop_for(opt)
    resumed.train()
    with open(model_file + ".trainstats") as f:
        assert json.load(f)["train_steps"] == 7  # not 8
    assert load_states(model_file + ".checkpoint")["number_training_updates"] == 7
    after = load_states(model_file)["model"]
    assert all(torch.equal(best_before[k], after[k]) for k in best_before)
