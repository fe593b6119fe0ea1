"""P9 host overhead: what ParlAI's and our Python cost per example around the model.

A GPU runs a gpt2-small training step of this recipe in about 0.8 ms per example (4
candidates x ~110 tokens x 6 x 124M FLOPs at 40% of an H200's bf16 peak); if the host side
(teacher -> observe -> vectorize -> batchify -> metrics) takes longer, the GPU waits. This
measures that host side on the CPU with a model whose forward is negligible: one layer, 8
dimensions, over the real GPT-2 vocabulary, on real ConvAI2 dialogs, through the real
`parlai train_model` / `eval_model` (ParlAI's own `exps`, examples per second, from its
last report). Train runs the recipe's README settings (4 candidates, 2 persona
permutations, max history 2, lm_coef 2), with and without `--num-workers 2` (ParlAI's
background preprocessing, which needs `--text-truncate`).

    python -m benchmarks --only P9 [--p9-profile]
"""
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys

from benchmarks.kill_resume import CONVAI2_800

GPU_BUDGET_MS = 0.8  # GPU time per training example of the recipe (see above)
RECIPE = ["--num-candidates", "4", "--personality-permutations", "2", "--max-history", "2", "--lm-coef", "2.0"]
PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")


def negligible_model(workdir):
    """A 1-layer, 8-dimensional GPT-2 with the real GPT-2 tokenizer, saved once."""
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    from parlai_transfertransfo.weights.tokenizers import load_tokenizer

    path = os.path.join(workdir, "negligible-gpt2")
    if not os.path.exists(os.path.join(path, "tokenizer_config.json")):
        config = GPT2Config(vocab_size=50257, n_positions=512, n_embd=8, n_layer=1, n_head=1)
        GPT2DoubleHeadsModel(config).save_pretrained(path)
        load_tokenizer(path).save_pretrained(path)  # a gpt2 folder without one: GPT-2's real BPE
    return path


def train_args(model, workdir, name, batch, steps, *extra):
    return ["train_model", "-m", "transfertransfo", "--model-name", model, "-t", "convai2_file",
            "--convai2-file", CONVAI2_800, "--valid-split", "0", "-mf", os.path.join(workdir, name, "model"),
            "--datapath", os.path.join(workdir, "data"), "-bs", str(batch), *RECIPE,
            "--max-train-steps", str(steps), "--log-every-n-steps", str(steps // 2), "--log-every-n-secs", "-1",
            "--validation-every-n-epochs", "-1", "--skip-generation", "true", "--no-cuda", "--short-final-eval",
            "true", "--validation-max-exs", "8", *extra]


def eval_args(model_file, workdir, batch, n):
    return ["eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", CONVAI2_800,
            "--valid-split", "0", "--datapath", os.path.join(workdir, "data"), "-bs", str(batch),
            "--num-examples", str(n), "--skip-generation", "true", "--no-cuda"]


def exps(output, train=True):
    """ParlAI's examples/s from the last report of its output (train logs: the last
    interval, past start-up; eval: the whole run)."""
    reports = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"exps"' in line]
    if train:
        reports = [r for r in reports if "mc_loss" in r]
    if not reports:
        raise RuntimeError("no report with exps in:\n" + output[-2000:])
    return reports[-1]["exps"]


def parlai(args, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    run = subprocess.run([PARLAI, *args], capture_output=True, text=True, env=env, timeout=3600)
    if run.returncode:
        raise RuntimeError(f"parlai {args[0]} failed:\n{(run.stdout + run.stderr)[-3000:]}")
    return run.stdout + run.stderr


def run(workdir, reps, threads=1, batch=32, steps=40, profile=False):
    """Milliseconds per example of each side (medians of `reps` runs)."""
    model = negligible_model(workdir)
    sides = {
        "train_model": lambda i: 1000 / exps(parlai(train_args(model, workdir, f"t{i}", batch, steps), threads)),
        "train_model --num-workers 2": lambda i: 1000 / exps(parlai(train_args(
            model, workdir, f"w{i}", batch, steps, "--num-workers", "2", "--text-truncate", "512"), threads)),
        "eval_model (ranking + ppl)": lambda i: 1000 / exps(parlai(eval_args(
            os.path.join(workdir, "t0", "model"), workdir, batch, batch * steps), threads), train=False),
    }
    times = {side: [] for side in sides}
    for i in range(reps):
        for side, measure in sides.items():
            times[side].append(measure(i))
    result = {"ms_per_example": times, "batch": batch, "budget_ms": GPU_BUDGET_MS}
    if profile:
        result["profile"] = profile_train(model, workdir, batch, steps)
    return result


def profile_train(model, workdir, batch, steps, top=25):
    """cProfile of an in-process train_model: the functions with the most own time."""
    from parlai.scripts.train_model import TrainModel

    profiler = cProfile.Profile()
    profiler.enable()
    TrainModel.main(*train_args(model, workdir, "profiled", batch, steps)[1:])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()
