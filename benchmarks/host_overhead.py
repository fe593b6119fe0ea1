"""P9 host overhead: what ParlAI's and our Python cost per example around the model.

A GPU runs a gpt2-small training step of this recipe in about 0.8 ms per example (4
candidates x ~110 tokens x 6 x 124M FLOPs at 40% of an H200's bf16 peak); if the host side
(teacher -> observe -> vectorize -> batchify -> instances -> metrics) takes longer, the GPU
waits. This measures the host side on the CPU, through the real `parlai train_model` /
`eval_model` loops run in-process, with a model whose work is small (one layer, 8
dimensions, over the real GPT-2 vocabulary) on real ConvAI2 dialogs, and subtracts the
time spent inside the model (forward, backward, optimizer step), timed around those calls.
Training runs the recipe's README settings (4 candidates, 2 persona permutations, max
history 2, lm_coef 2) at -bs 32, with and without `--num-workers 2` (ParlAI's background
preprocessing: observe and batchify move to worker processes, which needs --text-truncate).
Each side runs in a fresh process; the first 5 steps (start-up) are not counted.

    python -m benchmarks --only P9 [--p9-profile]
"""
import collections
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import time

from benchmarks.kill_resume import CONVAI2_800

GPU_BUDGET_MS = 0.8  # GPU time per training example of the recipe (see above)
RECIPE = ["--num-candidates", "4", "--personality-permutations", "2", "--max-history", "2", "--lm-coef", "2.0"]
SIDES = {
    "train_model": ("train", []),
    "train_model --num-workers 2": ("train", ["--num-workers", "2", "--text-truncate", "512"]),
    "eval_model (ranking + ppl, 20 candidates)": ("eval", []),
}
WARMUP = 5


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
    return ["-m", "transfertransfo", "--model-name", model, "-t", "convai2_file", "--convai2-file", CONVAI2_800,
            "--valid-split", "0", "-mf", os.path.join(workdir, name, "model"), "--datapath",
            os.path.join(workdir, "data"), "-bs", str(batch), *RECIPE, "--max-train-steps", str(steps),
            "--log-every-n-secs", "-1", "--validation-every-n-epochs", "-1", "--skip-generation", "true",
            "--no-cuda", "--short-final-eval", "true", "--validation-max-exs", "8", *extra]


def eval_args(model_file, workdir, batch, n):
    return ["-mf", model_file, "-t", "convai2_file", "--convai2-file", CONVAI2_800, "--valid-split", "0",
            "--datapath", os.path.join(workdir, "data"), "-bs", str(batch), "--num-examples", str(n),
            "--skip-generation", "true", "--no-cuda"]


class Clock:
    """Seconds inside the model, and the wall time of the steps after the warm-up."""

    def __init__(self):
        self.inside = collections.defaultdict(float)
        self.steps, self.start, self.end, self.training = 0, None, None, None

    def around(self, owner, name, key):
        call = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                if self.start is not None:
                    self.inside[key] += time.perf_counter() - start

        setattr(owner, name, timed)

    def step(self, owner, name):
        call = getattr(owner, name)

        def counted(agent, observations, *args, **kwargs):
            training = (observations.is_training if hasattr(observations, "is_training")  # a worker's Batch
                        else any("labels" in obs for obs in observations))  # what batch_act decides by
            if self.training is not None and training != self.training:
                return call(agent, observations, *args, **kwargs)  # train_model's final evaluation: not counted
            self.training = training
            if self.steps == WARMUP:
                self.start = time.perf_counter()
            self.steps += 1
            try:
                return call(agent, observations, *args, **kwargs)
            finally:
                self.end = time.perf_counter()

        setattr(owner, name, counted)


def waiting(clock):
    """With --num-workers, the main process blocks on the workers' queue when they fall
    behind (here they share 2 cores with the model): time spent in a get that found the
    queue empty is waiting, not host work."""
    from parlai.core.worlds import BackgroundDriverWorld

    get = BackgroundDriverWorld._queue_get

    def timed_get(world):
        empty = world._process_queue.empty()
        start = time.perf_counter()
        try:
            return get(world)
        finally:
            if empty and clock.start is not None:
                clock.inside["waiting on workers"] += time.perf_counter() - start

    BackgroundDriverWorld._queue_get = timed_get


def measure(kind, extra, workdir, batch, steps, profile=False):
    """One side, in this process: {wall, model, host} milliseconds per example."""
    import torch
    from parlai.core.torch_agent import TorchAgent

    from parlai_transfertransfo.agent.model import TransfertransfoModel

    torch.set_num_threads(1)
    clock = Clock()
    clock.around(TransfertransfoModel, "forward", "model")
    clock.around(TorchAgent, "backward", "model")
    clock.around(TorchAgent, "update_params", "model")
    clock.step(TorchAgent, "batch_act")
    waiting(clock)
    model = negligible_model(workdir)
    profiler = cProfile.Profile() if profile else None
    if kind == "train":
        from parlai.scripts.train_model import TrainModel

        shutil.rmtree(os.path.join(workdir, "p9-train"), ignore_errors=True)
        profiler and profiler.enable()
        TrainModel.main(*train_args(model, workdir, "p9-train", batch, steps, *extra))
    else:
        from parlai.scripts.eval_model import EvalModel

        model_file = os.path.join(workdir, "p9-model", "model")
        if not os.path.exists(model_file):
            from parlai_transfertransfo.weights.model_files import write_model_file

            write_model_file(model, model_file, os.path.join(workdir, "data"), model_name=model)
        profiler and profiler.enable()
        EvalModel.main(*eval_args(model_file, workdir, batch, batch * steps))
    profiler and profiler.disable()
    n = batch * (clock.steps - WARMUP - 1)
    wall, inside, wait = clock.end - clock.start, clock.inside["model"], clock.inside["waiting on workers"]
    result = {"wall": 1000 * wall / n, "model": 1000 * inside / n, "waiting": 1000 * wait / n,
              "host": 1000 * (wall - inside - wait) / n}
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        result["profile"] = out.getvalue()
    return result


def run(workdir, reps, batch=32, steps=40, profile=False):
    """{side: [host ms per example, one per rep]} and the model's share, each side in a
    fresh process, sides interleaved."""
    os.makedirs(workdir, exist_ok=True)
    negligible_model(workdir)
    host, model, wait, profiles = ({side: [] for side in SIDES} for _ in range(4))
    for rep in range(reps):
        for side, (kind, extra) in SIDES.items():
            cmd = [sys.executable, "-m", "benchmarks.host_overhead", kind, workdir, str(batch), str(steps),
                   "1" if profile and rep == 0 else "0", *extra]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            if run.returncode:
                raise RuntimeError(f"P9 {side} failed:\n{(run.stdout + run.stderr)[-3000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            host[side].append(result["host"])
            model[side].append(result["model"])
            wait[side].append(result["waiting"])
            if "profile" in result:
                profiles[side] = result["profile"]
    return {"host_ms": host, "model_ms": model, "waiting_ms": wait, "batch": batch, "steps": steps, "budget_ms": GPU_BUDGET_MS,
            "profiles": {k: v for k, v in profiles.items() if v}}


if __name__ == "__main__":  # one side, in its own process: KIND WORKDIR BATCH STEPS PROFILE [extra options]
    kind, workdir, batch, steps, profile, *extra = sys.argv[1:]
    out = measure(kind, extra, workdir, int(batch), int(steps), profile == "1")
    print(json.dumps(out))
