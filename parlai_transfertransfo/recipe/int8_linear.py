"""Linear layers in int8 on a CPU: torch's own x86 kernels, not ours.

`torch.ops.quantized.linear_dynamic` (fbgemm) multiplies int8 weights, quantized once per
output channel, by the input quantized on the fly (one scale per call), and returns
float32; on a CPU with VNNI it is 2-3x faster than the float32 matmul for a decoding step
and several times faster for a prefill (docs/benchmarks.md). Its module wrapper in
`torch.ao.nn.quantized.dynamic` always quantizes the input to 7 bits (`reduce_range`, which
CPUs without VNNI need); `Int8Linear` calls the op itself, with all 8 bits where VNNI is
there. `torch.ao.quantization` and quantized tensors are deprecated in torch 2.13 but still
shipped; constraints.txt pins torch, and test_cpu_dtype.py fails the day they go.

Weights: a Linear's [out, in] (transformers' GPT-2 `Conv1D` holds [in, out]: transposed).
"""
import warnings

import torch
from torch import nn


class Int8Linear(nn.Module):
    """y = x W^T + b, W int8 per output channel (symmetric), x quantized per call."""

    def __init__(self, weight, bias=None, reduce_range=False):
        super().__init__()
        weight = weight.detach().float()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.reduce_range = reduce_range
        scales = (weight.abs().amax(1) / 127).clamp(min=1e-12).double()
        zeros = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors: deprecated, see the module docstring
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(
                qweight, None if bias is None else bias.detach().float()
            )

    @classmethod
    def from_module(cls, module, reduce_range=False):
        """An Int8Linear computing what `module` (nn.Linear or transformers' Conv1D) does."""
        if isinstance(module, nn.Linear):
            return cls(module.weight, module.bias, reduce_range)
        return cls(module.weight.t(), module.bias, reduce_range)  # Conv1D: [in, out]

    def forward(self, x):
        shape = x.shape
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float(), self._packed, self.reduce_range)
        return out.view(*shape[:-1], self.out_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _convertible(module):
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def quantize(lm, reduce_range=False):
    """Every linear layer of `lm`'s body and its LM head -> Int8Linear, in place. Heads of
    ours (the MC head) and embeddings stay as they are; the LM head's int8 copy leaves the
    (tied) input embeddings in float."""
    body, head = lm.base_model, lm.get_output_embeddings()
    targets = [(name, m) for name, m in body.named_modules() if _convertible(m)]
    for name, module in targets:
        parent, _, child = name.rpartition(".")
        setattr(body.get_submodule(parent) if parent else body, child, Int8Linear.from_module(module, reduce_range))
    if head is not None and _convertible(head):
        lm.set_output_embeddings(Int8Linear.from_module(head, reduce_range))
    return lm
