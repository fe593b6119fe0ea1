"""Model files saved by main before the package moved into layers still load and give, to
the last digit, the metrics, replies and rankings they gave then.

tests/data/saved_by_main/ holds two tiny models trained with `parlai train_model` on the
code of commit 6c7c0cc (the last flat layout): a GPT-2 trained in full and a Llama trained
with --lora-rank, and `reference.json`, what that code's `eval_model` reported and replied
on three.txt (3 dialogs, 22 examples). Regenerate the reference with an older checkout's
parlai: `python tests/test_saved_model_files.py PATH/TO/parlai tests/data/saved_by_main/reference.json`.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

SAVED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "saved_by_main")
PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")


def evaluate(parlai, name, workdir):
    """eval_model of a copy of saved model `name` on three.txt: {report, examples}, each
    example's greedy reply and its five best-ranked candidates."""
    model_dir = os.path.join(workdir, name)
    shutil.copytree(os.path.join(SAVED, name), model_dir)
    logs = os.path.join(workdir, f"{name}.jsonl")
    report = os.path.join(workdir, f"{name}.json")
    subprocess.run(
        [parlai, "eval_model", "-mf", os.path.join(model_dir, "model"), "-t", "convai2_file",
         "--convai2-file", os.path.join(SAVED, "three.txt"), "--valid-split", "0",
         "--datapath", os.path.join(workdir, "data"), "-bs", "3", "--skip-generation", "false", "--inference", "greedy",
         "--world-logs", logs, "--report-filename", report],
        check=True, capture_output=True, text=True, timeout=600,
    )
    examples = []
    with open(logs, encoding="utf-8") as f:
        for line in f:
            for turn in json.loads(line)["dialog"]:
                bot = turn[1]
                examples.append({"text": bot["text"], "top5": bot["text_candidates"][:5]})
    with open(report, encoding="utf-8") as f:
        metrics = json.load(f)["report"]
    keep = ("exs", "hits@1", "hits@5", "hits@10", "ppl", "loss", "wppl", "f1", "token_acc")
    return {"report": {k: metrics[k] for k in keep}, "examples": examples}


@pytest.mark.parametrize("name", ["gpt2", "llama_lora"])
def test_a_model_file_saved_by_main_evaluates_exactly_as_it_did(name, tmp_path):
    with open(os.path.join(SAVED, "reference.json"), encoding="utf-8") as f:
        reference = json.load(f)[name]
    got = evaluate(PARLAI, name, str(tmp_path))
    assert got["examples"] == reference["examples"]
    assert got["report"]["exs"] == reference["report"]["exs"] == 22
    for key, value in reference["report"].items():
        assert got["report"][key] == pytest.approx(value, rel=1e-6), key


if __name__ == "__main__":  # python tests/test_saved_model_files.py PARLAI OUT.json
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: evaluate(sys.argv[1], name, tmp) for name in ("gpt2", "llama_lora")}
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
