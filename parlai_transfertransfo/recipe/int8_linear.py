"""Linear layers with int8 weights on a CPU (weight-only): torch's own kernel, not ours.

A decoding step reads every weight once, so a quarter of fp32's bytes is the lever. Weights
are int8, one scale per output channel (symmetric); activations stay in floating point, so
nothing about them is rounded to 8 bits. Measured on the zoo SmolLM2 model, quantizing the
activations too (fbgemm's dynamic int8 linear) cost 6 points of hits@1 on 16 dev examples and
most greedy replies; weights alone stay close to fp32 (docs/evaluation.md).

- few rows (a decoding step): `torch._weight_int8pack_mm`, torch's CPU kernel for int8
  weights times bf16 activations (its float32 path is a slow reference loop, so the input
  goes in as bf16 and the result comes back as the input's dtype);
- many rows (a prefill, a ranking pass): compute-bound, so the weights are widened to the
  input's dtype for that call and multiplied by torch's dense matmul.

Weights: a Linear's [out, in] (transformers' GPT-2 `Conv1D` holds [in, out]: transposed).
"""
import torch
import torch.nn.functional as F
from torch import nn

DECODE_ROWS = 16  # at most this many rows: the int8 kernel; more: the dense matmul


class Int8Linear(nn.Module):
    """y = x (W * scale)^T + b, W int8 [out, in] per output channel."""

    def __init__(self, weight, bias=None):
        super().__init__()
        weight = weight.detach().float().contiguous()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scales = (weight.abs().amax(1) / 127).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales)
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    @classmethod
    def fuse(cls, parts):
        """One Int8Linear whose output is `parts`' outputs side by side (q, k and v: one
        kernel call for a decoding step, not three), or None unless every part is an
        Int8Linear without bias. The parts then read their rows of its weights: the same
        int8 values and scales, no second copy."""
        if not all(isinstance(p, cls) and p.bias is None for p in parts):
            return None
        whole = cls.__new__(cls)
        nn.Module.__init__(whole)
        whole.in_features, whole.out_features = parts[0].in_features, sum(p.out_features for p in parts)
        for name in ("qweight", "scales", "scales_bf16"):
            whole.register_buffer(name, torch.cat([getattr(p, name) for p in parts]))
        whole.register_buffer("bias", None)
        start = 0
        for p in parts:
            for name in ("qweight", "scales", "scales_bf16"):
                setattr(p, name, getattr(whole, name)[start:start + p.out_features])
            start += p.out_features
        return whole

    @classmethod
    def from_module(cls, module):
        """An Int8Linear computing what `module` (nn.Linear or transformers' Conv1D) does."""
        if isinstance(module, nn.Linear):
            return cls(module.weight, module.bias)
        return cls(module.weight.t(), module.bias)  # Conv1D: [in, out]

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if flat.size(0) <= DECODE_ROWS:
            out = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.qweight, self.scales_bf16).to(x.dtype)
            if self.bias is not None:
                out = out + self.bias.to(x.dtype)
        else:
            weight = self.qweight.to(x.dtype) * self.scales[:, None].to(x.dtype)
            out = F.linear(flat, weight, None if self.bias is None else self.bias.to(x.dtype))
        return out.view(*shape[:-1], self.out_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def _convertible(module):
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def quantize(lm):
    """Every linear layer of `lm`'s body and its LM head -> Int8Linear, in place. Heads of
    ours (the MC head) and embeddings stay as they are; the LM head's int8 copy leaves the
    (tied) input embeddings in float."""
    body, head = lm.base_model, lm.get_output_embeddings()
    targets = [(name, m) for name, m in body.named_modules() if _convertible(m)]
    for name, module in targets:
        parent, _, child = name.rpartition(".")
        setattr(body.get_submodule(parent) if parent else body, child, Int8Linear.from_module(module))
    if head is not None and _convertible(head):
        lm.set_output_embeddings(Int8Linear.from_module(head))
    return lm
