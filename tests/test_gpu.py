"""The gpu tier: the equivalence tests that pin what the model computes, run again on CUDA
(every tensor the test helpers make lands on the GPU through torch's default device), and
the CLI training and evaluating on the GPU with ParlAI's --fp16 and our --bf16.

On a machine without CUDA every test here is reported as skipped, "not applicable", never
passed; `pytest -m gpu` selects them. benchmarks/gpu_check.sh runs them on the lent GPU.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import test_double_heads
import test_packing
from test_double_heads import FIXTURES, load

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="not applicable: no CUDA device here (benchmarks/gpu_check.sh runs the gpu tier)"),
]
PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")


@pytest.fixture
def on_cuda():
    with torch.device("cuda"):
        yield


def on_gpu(kind, request):
    """A CUDA copy of the tiny model the CPU tests use (theirs stays on the CPU)."""
    return copy.deepcopy(load(kind, request.getfixturevalue(FIXTURES[kind]))).to("cuda")


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_packed_scores_equal_the_cached_path_and_whole_sequences_on_cuda(kind, request, on_cuda):
    model = on_gpu(kind, request)
    test_packing.test_packed_scores_equal_the_cached_path_and_the_whole_sequences(model)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_cached_greedy_decoding_equals_full_rerun_on_cuda(kind, request, on_cuda):
    model = on_gpu(kind, request)
    speaker = torch.tensor([test_double_heads.SPEAKER1])
    contexts = [(torch.cat([i, speaker]), torch.cat([t, speaker]))
                for i, t in (test_double_heads.context(5, 20), test_double_heads.context(11, 21))]
    with torch.no_grad():
        cached, logits = test_double_heads.greedy_cached(model, model.encode_prefix(*test_double_heads.left_pad(contexts)), 20)
        for row, ctx in enumerate(contexts):
            tokens, want = test_double_heads.greedy_uncached(model, ctx, 20)
            assert cached[row].tolist() == tokens.tolist()
            torch.testing.assert_close(logits[row], want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_training_from_shared_contexts_equals_whole_sequences_on_cuda(kind, request, on_cuda):
    model = on_gpu(kind, request)
    test_double_heads.test_training_from_shared_contexts_equals_the_recipes_whole_sequences(model)


@pytest.mark.parametrize("precision", [["--fp16", "true"], ["--bf16", "true"]], ids=["fp16", "bf16"])
def test_the_cli_trains_and_evaluates_on_the_gpu(precision, tiny_gpt2_dir, tmp_path):
    from benchmarks.kill_resume import first_dialogs

    dialogs = first_dialogs(6, tmp_path / "six.txt")
    common = ["-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 0, "--datapath", tmp_path / "data"]
    train = subprocess.run([PARLAI, "train_model", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
                            "-mf", tmp_path / "model", "-bs", 8, "--max-train-steps", 10, "--skip-generation", "true",
                            *precision, *common], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    report = tmp_path / "report.json"
    evaluate = subprocess.run([PARLAI, "eval_model", "-mf", tmp_path / "model", "-bs", 8, "--inference", "greedy",
                               "--report-filename", report, *precision, *common],
                              capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    metrics = json.loads(report.read_text())["report"]
    assert metrics["exs"] == 43 and 0 <= metrics["hits@1"] <= 1 and metrics["ppl"] > 1
