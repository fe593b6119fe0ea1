"""benchmarks/: every comparison checks that its sides compute the same thing before it
times them, and a pair that disagrees stops with an error, never a ratio.

`python -m benchmarks` runs here on the tiny random GPT-2 standing in for gpt2-small (its
124M weights would take minutes on these CPUs); the code paths are those of a real run.
"""
import re

import pytest
import torch

from benchmarks import common, decoding, ranking, run, training

# bench -> (module, its reference side: the original recipe's algorithm, a disagreeing
# version of it, the error it must stop with)
REFERENCES = {
    "P1": (decoding, "no_cache_loop", lambda tokens: tokens[:-1] + [tokens[-1] + 1], "loops disagree"),
    "P2": (ranking, "full_sequence_scores", lambda scores: scores + torch.eye(len(scores))[3] * 1e-3,
           "scores differ"),
    "P3": (training, "plain_losses", lambda losses: (losses[0] * 1.001, losses[1]), "losses differ"),
}


class Bench:
    """`python -m benchmarks --only NAME` (run.main, in this process) with its reference
    side and its timing spied on: `events` lists them in the order they ran."""

    def __init__(self, monkeypatch, workdir, capsys):
        self.monkeypatch, self.workdir, self.capsys = monkeypatch, workdir, capsys
        self.events, self.out = [], ""

    def run(self, name, disagree=False):
        module, reference, change, _ = REFERENCES[name]
        original_side, original_timing = getattr(module, reference), module.interleaved

        def side(*args, **kwargs):
            self.events.append("reference")
            result = original_side(*args, **kwargs)
            return change(result) if disagree else result

        def timing(*args, **kwargs):
            self.events.append("timing")
            return original_timing(*args, **kwargs)

        self.monkeypatch.setattr(module, reference, side)
        self.monkeypatch.setattr(module, "interleaved", timing)
        try:
            run.main(["--model", "gpt2-small", "--only", name, "--reps", "1", "--train-batch-size", "2",
                      "--workdir", str(self.workdir), "--roofline", "quick"])
        finally:
            self.out = self.capsys.readouterr().out


@pytest.fixture
def bench(tiny_gpt2_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(common, "gpt2_small_dir", lambda workdir: tiny_gpt2_dir)
    return Bench(monkeypatch, tmp_path, capsys)


@pytest.mark.parametrize("name", ["P1", "P2", "P3"])
def test_each_benchmark_checks_its_sides_agree_before_timing_them(name, bench):
    bench.run(name)
    assert bench.events[0] == "reference" and "timing" in bench.events  # the check, then the clock
    tables = {"P2": ["P2 real data", "P2 one context"]}.get(name, [name])  # P2: two tables
    for table in tables:
        assert f"| {table} | gpt2-small" in bench.out
    assert "| ratio " in bench.out
    assert "roofline: fp32 GEMM " in bench.out.splitlines()[0]  # the machine, measured first
    if name in ("P1", "P3"):  # each figure against the limit that bounds it
        shares = re.findall(rf"\| {name} \| [^|]+ \| roofline: [^|]+ \| (\d+)%", bench.out)
        assert len(shares) == (3 if name == "P1" else 2) and all(int(s) > 0 for s in shares), bench.out


def test_the_roofline_arithmetic_of_docs_benchmarks():
    """The issue's machine (fp32 205 GFLOP/s, bf16 1.96 TFLOP/s, 25 GB/s) and a 135M model:
    a 201-token prefill of 54 GFLOP is 28 ms at the bf16 peak, a decoding step reads the
    weights (540 MB fp32: 22 ms; 270 MB bf16: 11 ms), so 20 tokens' floor is ~0.25 s in bf16;
    training in bf16 at 631 tok/s is 26% of the peak."""
    from benchmarks import roofline
    from parlai_transfertransfo.recipe import cpu_dtype

    m = roofline.Machine(205e9, 1.96e12, 25e9, cpu_dtype.Capability(True, True, True))
    n = 135e6
    assert roofline.phase(m, "bf16", flops=2 * n * 201) == pytest.approx(0.0277, rel=0.01)
    assert roofline.phase(m, "fp32", flops=2 * n, nbytes=4 * n) == pytest.approx(0.0216)
    assert roofline.reply_floor(m, "bf16", n, 2 * n, 200) == pytest.approx(0.0276 + 20 * 0.0108, rel=0.01)
    # 16 rows a step: the weights once, the FLOPs 16 times (fp32: 21 ms of compute, 22 of reads)
    assert roofline.reply_floor(m, "fp32", n, 4 * n, 100, rows=16) == pytest.approx(
        2 * n * 1600 / 205e9 + 20 * 0.0216, rel=0.01)
    assert roofline.training_fraction(m, "bf16", n, 631) == pytest.approx(0.26, abs=0.005)


@pytest.mark.parametrize("name", ["P1", "P2", "P3"])
def test_a_benchmark_whose_sides_disagree_stops_with_an_error_and_no_ratio(name, bench):
    with pytest.raises(AssertionError, match=REFERENCES[name][3]):
        bench.run(name, disagree=True)
    assert bench.events == ["reference"]  # checked once, never timed
    assert "ratio" not in bench.out


def test_p6b_times_a_poisoned_request_that_fails_alone(bench):
    """P6b: the 16 sessions' replies with the poisoned request among them are P6's (checked
    before timing), it fails in every repetition, and the ratio to P6 is printed."""
    import concurrent.futures

    args = ["--model", "gpt2-small", "--only", "P6b", "--reps", "1", "--p6-messages", "opening",
            "--workdir", str(bench.workdir), "--roofline", "quick"]
    # a thread of its own: P6b runs asyncio, which a browser test's loop in this thread refuses
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(run.main, args).result()
    out = bench.capsys.readouterr().out
    assert ("| P6b | gpt2-small, opening message | ratio 16 sessions at once (dynamic batching), one poisoned "
            "request among them / 16 sessions at once (dynamic batching) |") in out
    assert "it failed alone 1 times in 1 repetitions, the 16 replies equal P6's" in out
