"""The machine's limits, measured first in every benchmark run, and each figure against them.

On a CPU a decoding step reads every weight once (bandwidth-bound: bytes / GB/s), and a
prefill or a training step multiplies (compute-bound: FLOPs / the GEMM peak). A phase's
floor is the larger of the two; a benchmark's floor is the sum over its phases, and its
figure is shown as floor / measured time (docs/cpu-inference.md, "The roofline", has the
arithmetic). Measured with torch on the benchmark's threads, as the models run:

- GEMM peaks: the best of a few square matmuls (2·n³ FLOPs), fp32 and bf16;
- memory read bandwidth: the best of a few sums over a buffer far larger than the caches;
- bf16 hardware: torch's own detection of AVX512-BF16 and AMX (recipe/cpu_dtype.py).
"""
import time
from dataclasses import dataclass

import torch
from torch import nn

from parlai_transfertransfo.recipe import cpu_dtype, int8_linear


@dataclass(frozen=True)
class Machine:
    fp32_flops: float  # FLOP/s
    bf16_flops: float
    read_bytes: float  # bytes/s
    capability: cpu_dtype.Capability

    def peak(self, dtype):
        """The matmul peak a pass in `dtype` runs at (int8 prefills widen to fp32: int8_linear)."""
        return self.bf16_flops if dtype == "bf16" else self.fp32_flops

    def lines(self):
        return [f"roofline: fp32 GEMM {self.fp32_flops / 1e9:.0f} GFLOP/s, bf16 GEMM {self.bf16_flops / 1e9:.0f} "
                f"GFLOP/s, memory read {self.read_bytes / 1e9:.1f} GB/s; CPU: {self.capability.describe()}"]


def _best(fn, reps, warmup=0.2):
    """The fastest of `reps` calls, after `warmup` seconds of calls: a cold process (threads
    waking, pages faulting in) measured one 1024² fp32 matmul at 40% of its speed."""
    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(quick=False):
    """This machine's limits on torch's current threads (~3 s; quick: a fraction of a second)."""
    n, reps, warmup = (256, 2, 0.02) if quick else (1024, 4, 0.2)
    flops = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        flops[dtype] = 2 * n ** 3 / _best(lambda: torch.mm(a, b), reps, warmup)
    buffer = torch.ones((8 if quick else 64) * 2 ** 20)  # 32 MiB / 256 MiB of float32
    read = buffer.numel() * 4 / _best(buffer.sum, reps, warmup)
    return Machine(flops[torch.float32], flops[torch.bfloat16], read, cpu_dtype.detect())


def model_sizes(lm):
    """(matmul parameters, bytes a decoding step reads): every linear layer's weights in the
    format they are stored in (the LM head included, tied or not; embeddings are looked up,
    one row a token, and left out)."""
    params = nbytes = 0
    for module in lm.modules():
        if isinstance(module, int8_linear.Int8Linear):
            params += module.qweight.numel()
            nbytes += module.qweight.numel() + module.scales_bf16.numel() * 2
        elif isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            params += module.weight.numel()
            nbytes += module.weight.numel() * module.weight.element_size()
    return params, nbytes


def phase(machine, dtype, flops=0.0, nbytes=0.0):
    """The floor of one phase in seconds: compute or memory, whichever is slower."""
    return max(flops / machine.peak(dtype), nbytes / machine.read_bytes)


def reply_floor(machine, dtype, params, nbytes, context, steps=20, rows=1):
    """`rows` replies of `steps` tokens after `context`-token prefills (attention's FLOPs,
    a few per cent at these lengths, left out): the prefills, then one step reads the
    weights once for every row."""
    prefill = phase(machine, dtype, flops=2 * params * context * rows, nbytes=nbytes)
    return prefill + steps * phase(machine, dtype, flops=2 * params * rows, nbytes=nbytes)


def training_fraction(machine, dtype, params, tokens_per_s):
    """A training step's share of the GEMM peak: 6·N FLOPs a token (forward 2, backward 4)."""
    return 6 * params * tokens_per_s / machine.peak(dtype)


# --- each benchmark's figure against its floor (rows for run.py's table) --------------------
def _row(bench, model, side, floor, measured, goal="", ok=None):
    share = floor / measured
    verdict = "" if ok is None else ("ok" if ok(share) else "MISSED")
    return (bench, model, f"roofline: {side}", f"{share:.0%} of the machine (floor {floor:.3f} s, "
            f"measured {measured:.3f} s)", goal, verdict)


def p1_rows(machine, model, result, median):
    """P1: one reply (prefill of the context, then 20 steps) per --cpu-dtype side."""
    from benchmarks.decoding import STEPS, agent_side

    rows = []
    for mode, (params, nbytes) in result["sizes"].items():
        floor = reply_floor(machine, mode, params, nbytes, result["context_tokens"], STEPS)
        step = phase(machine, mode, flops=2 * params, nbytes=nbytes)
        rows.append(_row("P1", model, f"{agent_side(mode)} ({nbytes / 1e6:.0f} MB of weights a step, "
                         f"step floor {step * 1e3:.1f} ms)", floor, median(result["times"][agent_side(mode)])))
    return rows


def p3_rows(machine, model, dtype, result, side):
    share = training_fraction(machine, dtype, result["params"], result["tokens_per_s"][side])
    goal, ok = (">= 50% of the bf16 peak", lambda s: s >= 0.5) if dtype == "bf16" else ("", None)
    verdict = "" if ok is None else ("ok" if ok(share) else "MISSED")
    return [("P3", f"{model} {dtype}", f"roofline: {side}, 6·N·tokens/s over the {dtype} GEMM peak",
             f"{share:.0%}", goal, verdict)]


def p6_rows(machine, model, result, median, sides):
    """P6: n sessions' replies at once (one step reads the weights once for every row), or
    one at a time (n prefills and n x 20 steps)."""
    from benchmarks.decoding import STEPS

    params, nbytes = result["sizes"]
    n, context, rows = result["sessions"], result["context_tokens"], []
    for side in sides:
        at_once = side.startswith("16 sessions at once")
        floor = (reply_floor(machine, "fp32", params, nbytes, context, STEPS, rows=n) if at_once
                 else n * reply_floor(machine, "fp32", params, nbytes, context, STEPS))
        rows.append(_row("P6", model, side, floor, median(result["wall"][side])))
    return rows


def p7_rows(machine, model, result, sides):
    """P7: per example, its ranking pass (context once, its candidates after it) and its
    share of a 20-step greedy reply decoded with the batch's other rows."""
    from benchmarks.decoding import STEPS

    params, nbytes = result["sizes"]
    rows, batch = [], result["batch_size"]
    for side, bf16 in sides.items():
        dtype = "bf16" if bf16 else "fp32"
        per_example = phase(machine, dtype, flops=2 * params * result["tokens_per_example"])
        per_example += STEPS * phase(machine, dtype, flops=2 * params * batch, nbytes=nbytes) / batch
        rows.append(_row("P7", model, side, per_example, 1 / result["examples_per_s"][side]))
    return rows
