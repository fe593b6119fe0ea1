"""Model files never run code: every load of a transfertransfo agent is weights-only.

The crafted files are real: pickles whose loading calls `os.system` to create a file. A
test passes only if that file was never created and the refusal is one line naming the
model file. Files saved by this package before the change (tests/data/trust) still load.
"""
import argparse
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from parlai.core.agents import create_agent, create_agent_from_model_file
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser

from conftest import TEST_DATA
from trust_helpers import run_parlai
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.weights.safe_load import load_states, UnsafeModelFile

SAVED_BEFORE = os.path.join(TEST_DATA, "trust", "saved_before_safe_loading")


class RunsCode:
    """Unpickling this calls os.system(command): what a crafted model file does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def old_model(tmp_path):
    """A copy of the model files saved by the code before safe loading."""
    folder = tmp_path / "old"
    shutil.copytree(SAVED_BEFORE, folder)
    return str(folder / "model")


def craft(model_file, witness, zip_format=True):
    """Replace a model file by one that creates `witness` when unpickled."""
    payload = {"model": RunsCode(f"touch {witness}")}
    if zip_format:
        torch.save(payload, model_file)
    else:
        with open(model_file, "wb") as f:
            pickle.dump(payload, f, protocol=2)


def test_crafted_model_file_is_refused_in_one_line_before_it_runs(old_model, tmp_path):
    witness = tmp_path / "PWNED"
    craft(old_model, witness)
    code, out, err = run_parlai("interactive", "-mf", old_model, stdin=b"hi\n")
    assert code == 1
    assert not witness.exists()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"transfertransfo: refusing to load {old_model}: it would import and call posix.system, "
        "which can run any code (nothing in it was run); add --trust-model-file true only if "
        "you made this file or trust who did"
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch.save", "plain pickle"])
def test_every_route_into_a_model_file_is_weights_only(old_model, tmp_path, zip_format):
    """--init-model, .checkpoint (a resume), export and the LoRA adapter extractor too."""
    from parlai_transfertransfo.weights import model_files

    witness = tmp_path / "PWNED"
    checkpoint = old_model + ".checkpoint"
    craft(checkpoint, witness, zip_format)
    opt = ParlaiParser(True, True).parse_args(
        ["-m", "transfertransfo", "--init-model", checkpoint, "--datapath", str(tmp_path)]
    )
    with pytest.raises(TransfertransfoError, match=f"load {checkpoint}"):
        create_agent(opt)
    with pytest.raises(TransfertransfoError, match=f"load {checkpoint}"):
        model_files.export_pretrained(checkpoint, str(tmp_path / "export"))
    with pytest.raises(TransfertransfoError, match=f"load {checkpoint}"):
        model_files.extract_adapter(checkpoint, str(tmp_path / "adapter"))
    assert not witness.exists()


def test_the_released_checkpoint_converter_refuses_code(tmp_path):
    from parlai_transfertransfo.weights.convert import load_legacy_double_heads

    witness = tmp_path / "PWNED"
    for name in ("config.json", "vocab.json", "merges.txt"):
        (tmp_path / name).write_text("{}")
    craft(str(tmp_path / "pytorch_model.bin"), witness, zip_format=False)
    with pytest.raises(UnsafeModelFile, match="pytorch_model.bin: it would import and call posix.system"):
        load_legacy_double_heads(str(tmp_path))
    assert not witness.exists()


def test_crafted_pickled_opt_file_is_refused_before_it_runs(old_model, tmp_path):
    """ParlAI reads a .opt that is not UTF-8 with pickle.load (compat.safe_opt_files)."""
    witness = tmp_path / "PWNED"
    with open(old_model + ".opt", "wb") as f:
        pickle.dump({"model": "transfertransfo", "x": RunsCode(f"touch {witness}")}, f, protocol=2)
    with pytest.raises(TransfertransfoError, match="refusing to read .*model.opt: not JSON, and not a plain pickled dict"):
        Opt.load(old_model + ".opt")
    code, _, err = run_parlai("interactive", "-mf", old_model, stdin=b"hi\n")
    assert code == 1 and "Traceback" not in err and not witness.exists()
    assert err.strip().splitlines()[-1].startswith(f"transfertransfo: refusing to read {old_model}.opt")
    # ParlAI's oldest .opt files, plain pickled dicts, still read
    with open(old_model + ".opt", "wb") as f:
        pickle.dump({"model": "transfertransfo", "n": 3}, f, protocol=2)
    assert Opt.load(old_model + ".opt") == {"model": "transfertransfo", "n": 3}


def test_files_saved_before_safe_loading_still_load(old_model, tmp_path):
    """The best model chats; the checkpoint resumes with its optimizer and scheduler."""
    agent = create_agent_from_model_file(old_model, {"datapath": str(tmp_path), "inference": "greedy", "skip_generation": False})
    agent.observe({"text": "hi! how are you?", "episode_done": False})
    assert agent.act()["text"].strip()

    saved = torch.load(old_model + ".checkpoint", weights_only=True)
    opt = ParlaiParser(True, True).parse_args(
        ["-mf", old_model, "--init-model", old_model + ".checkpoint", "--datapath", str(tmp_path)]
    )
    opt["load_from_checkpoint"] = True  # what train_model sets when it resumes
    resumed = create_agent(opt)
    assert resumed._number_training_updates == saved["number_training_updates"] == 7
    state = resumed.optimizer.state_dict()["state"]
    assert float(state[0]["step"]) == float(saved["optimizer"]["state"][0]["step"])
    assert torch.equal(state[0]["exp_avg"], saved["optimizer"]["state"][0]["exp_avg"])
    assert resumed.scheduler.get_state_dict()["best"] == saved["lr_scheduler"]["best"]


def test_trust_model_file_is_the_only_way_to_load_a_legacy_pickle(old_model, tmp_path):
    """A legacy file that needs a class beyond plain data (fairseq-style argparse args) loads
    only with --trust-model-file true on the command line, never because its .opt says so."""
    states = torch.load(old_model, weights_only=True)
    states["args"] = argparse.Namespace(arch="gpt2")
    torch.save(states, old_model)
    with pytest.raises(UnsafeModelFile, match="it would import and call argparse.Namespace"):
        create_agent_from_model_file(old_model, {"datapath": str(tmp_path)})

    with open(old_model + ".opt") as f:
        saved_opt = json.load(f)
    with open(old_model + ".opt", "w") as f:  # a file cannot vouch for itself
        json.dump(dict(saved_opt, trust_model_file=True, override={"trust_model_file": True}), f)
    with pytest.raises(UnsafeModelFile):
        create_agent_from_model_file(old_model, {"datapath": str(tmp_path)})

    agent = create_agent_from_model_file(old_model, {"datapath": str(tmp_path), "trust_model_file": True})
    agent.save(str(tmp_path / "resaved" / "model"))
    with open(tmp_path / "resaved" / "model.opt") as f:
        assert "trust_model_file" not in json.load(f)
    assert "args" not in load_states(str(tmp_path / "resaved" / "model"))  # clean again


def test_damaged_files_are_one_line_each(old_model, tmp_path):
    with open(old_model, "rb") as f:
        data = f.read()
    cases = {
        "empty": (b"", "the file is empty"),
        "truncated": (data[: len(data) // 2], "truncated or damaged"),
        "random": (os.urandom(4096), "not a file saved by torch.save, or damaged"),
        "list": (None, "it holds a list, not a ParlAI model file's dict"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is None:
            torch.save([1, 2], path)
        else:
            path.write_bytes(content)
        with pytest.raises(TransfertransfoError, match=message) as err:
            load_states(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value), name


# every optimizer ParlAI offers that trains an ordinary model (lbfgs needs a closure,
# sparseadam sparse gradients, muon 2-D weights only; `optimizer` is the base class)
OPTIMIZERS = ["adafactor", "adadelta", "adagrad", "adam", "adamax", "adamw", "asgd", "nadam",
              "radam", "rmsprop", "rprop", "sgd", "mem_eff_adam"]
SCHEDULERS = ["reduceonplateau", "linear", "invsqrt", "cosine", "fixed", "none"]


def test_every_parlai_optimizer_and_scheduler_state_loads_weights_only(tmp_path):
    """What ParlAI pickles into a model file (optimizer, scheduler, warmup, update count)
    is plain data for every optimizer and scheduler it offers: no need to turn safety off."""
    from test_agent import first_example
    from trust_helpers import tiny_bpe_gpt2_dir

    backbone = tiny_bpe_gpt2_dir(tmp_path / "backbone")
    for i, (optimizer, scheduler) in enumerate(zip(OPTIMIZERS, SCHEDULERS * 3)):
        opt = ParlaiParser(True, True).parse_args([
            "-m", "transfertransfo", "--model-name", backbone, "--datapath", str(tmp_path),
            "--optimizer", optimizer, "--lr-scheduler", scheduler, "--warmup-updates", "1", "-lr", "1e-3",
        ])
        opt["max_train_steps"] = 10  # train_model's option, which linear and cosine need
        agent = create_agent(opt)
        example = first_example()
        example.force_set("labels", example.pop("eval_labels"))
        for _ in range(2):
            agent.observe(example.copy())
            agent.act()
            agent.reset()
        agent.receive_metrics({"ppl": np.float64(10.0), "loss": np.float32(2.3)})
        path = str(tmp_path / f"model{i}")
        agent.save(path)
        states = load_states(path)
        assert states["optimizer_type"] == optimizer and states["number_training_updates"] == 2
        assert states.get("lr_scheduler_type", "none") == scheduler


def test_numpy_numbers_and_parlai_opts_are_data(tmp_path):
    """SAFE_GLOBALS: metric values as numpy scalars and ParlAI's Opt dict, which plain
    weights-only loading refuses, load; nothing else is added."""
    path = str(tmp_path / "model")
    torch.save({"lr_scheduler": {"best": np.float64(1.5), "n": np.int64(3)}, "opt": Opt({"a": 1})}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    states = load_states(path)
    assert states["lr_scheduler"] == {"best": 1.5, "n": 3} and states["opt"] == {"a": 1}
