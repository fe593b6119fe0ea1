"""zoo/transfertransfo/train_smollm2_135m.sh, the documented training run, end to end on a
tiny Llama backbone: a sliver of an epoch on the real ConvAI2 dialogs, the adapter, and
the two dev reports (fine-tuned, and the backbone ranking by LM likelihood)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, TEST_DATA

CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")

SCRIPT = os.path.join(REPO, "zoo", "transfertransfo", "train_smollm2_135m.sh")
SHIPPED = os.path.join(REPO, "zoo", "transfertransfo", "smollm2_135m_adapter")


def _sha(path):
    from parlai_transfertransfo.zoo.transfertransfo.smollm2_135m import _sha256

    return _sha256(path)


def run_script(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", SCRIPT, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def test_training_script_writes_an_artifact_and_both_dev_reports(tiny_llama_dir, tmp_path):
    shipped = _sha(SHIPPED)
    proc = run_script("--model-name", tiny_llama_dir, "--epochs", 0.02, "--dev-examples", 8,
                      "--rank", 2, "--out", tmp_path / "run")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert _sha(SHIPPED) == shipped  # a smoke run never replaces the shipped adapter
    reports = {}
    for name in ("dev_finetuned", "dev_baseline"):
        with open(tmp_path / "run" / f"{name}.json") as f:
            reports[name] = json.load(f)
        assert reports[name]["report"]["exs"] == 8, name
    assert "f1" in reports["dev_finetuned"]["report"]  # greedy replies were generated
    baseline = reports["dev_baseline"]["opt"]  # the backbone as it comes, ranking by LM likelihood
    assert (baseline["model_name"], baseline["rank_by"], baseline.get("model_file")) == (tiny_llama_dir, "lm", None)

    # the fine-tuned report describes the adapter written: a model built from it scores
    # the same dev examples (eval_model's, in this process: 8 examples, batches of 8) the same
    from parlai.core.metrics import Metric
    from parlai.scripts.eval_model import EvalModel

    from parlai_transfertransfo.zoo.transfertransfo.smollm2_135m import build

    model_file = build(str(tmp_path / "zoo"), str(tmp_path / "run" / "adapter"))
    report = EvalModel.main("-mf", model_file, "-t", "convai2_file", "--convai2-file", CONVAI2_800,
                            "--valid-split", "100", "-dt", "valid", "--datapath", str(tmp_path / "zoo"),
                            "--num-examples", "8", "-bs", "8", "--skip-generation", "true")
    report = {k: v.value() if isinstance(v, Metric) else v for k, v in report.items()}
    finetuned = reports["dev_finetuned"]["report"]
    assert report["exs"] == 8
    assert finetuned["hits@1"] == pytest.approx(report["hits@1"], abs=1e-4)
    assert finetuned["ppl"] == pytest.approx(report["ppl"], rel=6e-4)  # reports: 4 digits


def test_training_script_refuses_bad_arguments_in_one_line(tmp_path):
    proc = run_script("--epochs", "three", "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "--epochs must be a number, got 'three'"
    assert not os.path.exists(tmp_path / "run")
    proc = run_script("--hours")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: ")
