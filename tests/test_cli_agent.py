"""End to end through the real `parlai` command line: train, evaluate, chat, multiprocess.

A tiny random GPT-2 (real GPT-2 tokenizer) is fine-tuned with the recipe on six real
ConvAI2 validation dialogs; the tests check what a user would look at.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import TEST_DATA

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")


def first_dialogs(n, path):
    """The first n dialogs of the 800 real ConvAI2 validation dialogs, written to path."""
    out, dialogs = [], 0
    with open(CONVAI2_800) as f:
        for line in f:
            if line.startswith("1 "):
                dialogs += 1
                if dialogs > n:
                    break
            out.append(line)
    with open(path, "w") as f:
        f.writelines(out)
    return str(path)


def parlai(*args, stdin=None, timeout=600):
    proc = subprocess.run(
        [PARLAI, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def reports(output):
    """Every metrics report ParlAI printed, in order (one JSON object per line)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and line.endswith("}")]


@pytest.fixture(scope="module")
def six_dialogs(tmp_path_factory):
    return first_dialogs(6, tmp_path_factory.mktemp("convai2") / "six.txt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_gpt2_dir, six_dialogs):
    """Overfit the tiny model on six dialogs (chance is 1/20 = 0.05 hits@1)."""
    out = tmp_path_factory.mktemp("trained")
    log = parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
        "-t", "convai2_file", "--convai2-file", six_dialogs, "--valid-split", 0,
        "-mf", out / "model", "--datapath", out / "data",
        "-bs", 8, "--num-epochs", 30, "-lr", 1e-3, "--skip-generation", "true",
        "--validation-every-n-epochs", -1, "--log-every-n-steps", 10,
    )
    return str(out / "model"), log


def test_training_lowers_the_loss_and_learns_to_rank(trained):
    model_file, log = trained
    train_reports = [r for r in reports(log) if "mc_loss" in r]
    assert len(train_reports) >= 3
    first, last = train_reports[0], train_reports[-1]
    assert last["loss"] < first["loss"] - 2.0  # LM loss on the gold reply
    assert last["mc_loss"] < first["mc_loss"]
    for name in ("model", "model.dict", "model.opt", "model.hf_config.json"):
        assert os.path.exists(model_file[: -len("model")] + name)


def test_eval_on_convai2_reports_hits_f1_and_ppl(trained, six_dialogs, tmp_path):
    """`parlai eval_model -t convai2` with ParlAI's own teacher, installed offline."""
    model_file, _ = trained
    source = tmp_path / "convai2"
    source.mkdir()
    os.symlink(six_dialogs, source / "valid_self_original.txt")
    parlai("install_convai2", "--source", source, "--datapath", tmp_path / "data")
    out = parlai(
        "eval_model", "-mf", model_file, "-t", "convai2", "-dt", "valid",
        "--datapath", tmp_path / "data", "-bs", 8, "--inference", "greedy", "--skip-generation", "false",
    )
    final = reports(out)[-1]
    assert final["exs"] == 43  # every utterance of the six dialogs
    assert final["hits@1"] > 0.3  # chance is 0.05: the MC head has learnt the gold replies
    assert 1.0 < final["ppl"] < 1000.0
    assert 0.0 <= final["f1"] <= 1.0 and final["gen_n_toks"] > 0


def test_scores_do_not_depend_on_batch_composition(trained, six_dialogs, tmp_path):
    model_file, _ = trained
    common = ["-mf", model_file, "-t", "convai2_file", "--convai2-file", six_dialogs,
              "--valid-split", 0, "--datapath", tmp_path, "--skip-generation", "true"]
    one = reports(parlai("eval_model", *common, "-bs", 1))[-1]
    eight = reports(parlai("eval_model", *common, "-bs", 8))[-1]
    for metric in ("hits@1", "hits@5", "loss", "ppl", "token_acc"):
        assert one[metric] == pytest.approx(eight[metric], rel=1e-4), metric


def test_rank_by_lm_ranks_with_the_language_model(trained, six_dialogs, tmp_path):
    model_file, _ = trained
    out = parlai("eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", six_dialogs,
                 "--valid-split", 0, "--datapath", tmp_path, "--skip-generation", "true",
                 "--rank-by", "lm", "-bs", 8)
    assert reports(out)[-1]["hits@1"] > 0.05


def test_interactive_answers_each_piped_line_and_exits(trained):
    model_file, _ = trained
    out = parlai(
        "interactive", "-mf", model_file, "--inference", "greedy", "--skip-generation", "false",
        stdin="hi! how are you today?\nwhat do you do? <eos> <speaker2> <bos>\n",
        timeout=300,
    )
    replies = re.findall(r"\[Transfertransfo\]: (.*)", out)
    assert len(replies) == 2
    assert all(reply.strip() for reply in replies)  # never blank (minimum length 1)
    assert "CHAT DONE" in out


def test_multiprocessing_train_runs_two_cpu_workers(tiny_gpt2_dir, six_dialogs, tmp_path):
    out = parlai(
        "multiprocessing_train", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
        "-t", "convai2_file", "--convai2-file", six_dialogs, "--valid-split", 0,
        "-mf", tmp_path / "model", "--datapath", tmp_path / "data", "-bs", 4,
        "--num-epochs", 1, "--skip-generation", "true", "--distributed-world-size", 2,
        "--port", 0 if False else 61000 + os.getpid() % 3000,
    )
    assert os.path.exists(tmp_path / "model")
    final = reports(out)[-1]
    assert final["exs"] == 43 and "hits@1" in final


def test_unknown_model_name_is_one_clear_line(tmp_path, six_dialogs):
    proc = subprocess.run(
        [PARLAI, "train_model", "-m", "transfertransfo", "--model-name", str(tmp_path / "nope"),
         "-t", "convai2_file", "--convai2-file", six_dialogs, "-mf", str(tmp_path / "m"),
         "--datapath", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("transfertransfo: no such model directory")


def test_missing_model_file_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [PARLAI, "eval_model", "-mf", str(tmp_path / "missing" / "model"), "-t", "convai2_file",
         "--convai2-file", CONVAI2_800, "--datapath", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
