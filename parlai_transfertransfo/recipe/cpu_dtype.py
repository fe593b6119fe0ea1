"""The weight format a CPU runs inference in (`--cpu-dtype auto|fp32|bf16|int8`).

A decoding step reads every weight once, so on a CPU its time is the weights' bytes over
the memory bandwidth, and a prefill's is its FLOPs over the matmul peak (docs/cpu-inference.md,
the roofline). Fewer bytes per weight, or a faster matmul, is the lever:

- fp32: the weights as trained; bit for bit the recipe's numbers.
- bf16: the weights cast to bfloat16 (half the bytes). Fast only where the CPU multiplies
  bf16 itself (AVX512-BF16 or AMX); elsewhere torch emulates it, several times slower than fp32.
- int8: every linear layer of the backbone, its LM head included, with int8 weights per
  output channel (a quarter of the bytes), activations in floating point: torch's own
  weight-only int8 kernel for decoding steps (`int8_linear.py`).
- auto (the default): fp32 for now, on every CPU. A default may lose at most 0.5 point of
  hits@1 and F1 (docs/evaluation.md measures each mode: bf16 loses 0.55 of F1), and every
  equivalence test of the suite compares with fp32. Where the CPU has bf16, the line `auto`
  prints says `--cpu-dtype bf16` is there (on an AVX512-BF16 EPYC its prefills are 1.8x
  fp32's speed, its one-row steps no faster: docs/cpu-inference.md).

Training always runs fp32 weights (its mixed precision is `--bf16 true`); the MC head
stays fp32 in every mode. `convert` changes a DoubleHeads in place, once, after its weights
are loaded.
"""
from dataclasses import dataclass

import torch

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe import int8_linear

MODES = ("auto", "fp32", "bf16", "int8")
REDUCED = ("bf16", "int8")


@dataclass(frozen=True)
class Capability:
    """What this CPU multiplies natively (torch's own detection of the instruction sets)."""

    avx512_bf16: bool
    amx: bool
    vnni: bool

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx

    def describe(self) -> str:
        have = [name for name, on in (("AMX", self.amx), ("AVX512-BF16", self.avx512_bf16),
                                      ("VNNI", self.vnni)) if on]
        return ", ".join(have) if have else "no AMX, AVX512-BF16 or VNNI"


def detect() -> Capability:
    cpu = torch.cpu
    return Capability(
        avx512_bf16=bool(cpu._is_avx512_bf16_supported()),
        amx=bool(cpu._is_amx_tile_supported()),
        vnni=bool(cpu._is_vnni_supported()),
    )


def resolve(asked: str, capability: Capability | None = None, training: bool = False) -> str:
    """The mode `asked` stands for on this CPU (None: this machine's). Training runs fp32
    weights: auto says so, an explicit bf16 or int8 is refused in one line."""
    if asked not in MODES:
        raise TransfertransfoError(f"--cpu-dtype {asked}: choose one of {', '.join(MODES)}")
    if training:
        if asked in REDUCED:
            hint = " (mixed precision: --bf16 true)" if asked == "bf16" else ""
            raise TransfertransfoError(
                f"--cpu-dtype {asked} converts the weights for inference; training updates fp32 "
                f"weights: use --cpu-dtype auto or fp32{hint}"
            )
        return "fp32"
    return "fp32" if asked == "auto" else asked


def slow_warning(mode: str, capability: Capability) -> str | None:
    """One line when the mode asked for runs slower than fp32 on this CPU, else None."""
    if mode == "bf16" and not capability.native_bf16:
        return ("--cpu-dtype bf16 on a CPU without AVX512-BF16 or AMX: torch emulates bfloat16 "
                "matmuls, several times slower than fp32 (the numbers are those of bf16)")
    return None


def convert(double_heads, mode: str):
    """Put `double_heads` (eval mode, weights loaded) in `mode`, in place; returns it."""
    if mode == "fp32":
        return double_heads
    if mode == "bf16":  # the backbone; our MC head (outside it) stays float32
        double_heads.lm.to(torch.bfloat16)
        return double_heads
    if mode == "int8":
        int8_linear.quantize(double_heads.lm)
        return double_heads
    raise TransfertransfoError(f"--cpu-dtype {mode}: choose one of {', '.join(MODES)}")
