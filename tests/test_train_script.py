"""zoo/transfertransfo/train_smollm2_135m.sh, the documented training run, end to end on a
tiny Llama backbone: a sliver of an epoch on the real ConvAI2 dialogs, the adapter, and
the two dev reports (fine-tuned, and the backbone ranking by LM likelihood)."""
import json
import os
import subprocess
import sys

from conftest import REPO

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
    assert os.path.getsize(tmp_path / "run" / "adapter" / "adapter_model.safetensors") > 0
    for name in ("dev_finetuned.json", "dev_baseline.json"):
        with open(tmp_path / "run" / name) as f:
            report = json.load(f)["report"]
        assert report["exs"] == 8 and 0 <= report["hits@1"] <= 1, name
    with open(tmp_path / "run" / "dev_finetuned.json") as f:
        assert "f1" in json.load(f)["report"]  # greedy replies were generated


def test_training_script_refuses_bad_arguments_in_one_line(tmp_path):
    proc = run_script("--epochs", "three", "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "--epochs must be a number, got 'three'"
    assert not os.path.exists(tmp_path / "run")
    proc = run_script("--hours")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: ")
