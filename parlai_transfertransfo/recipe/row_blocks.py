"""A one-row fp32 matmul on every core, bit for bit: the weight's rows in blocks, one bmm.

A decoding step of one reply multiplies one row by each weight ([1, K] x [K, N]). torch's
fp32 path hands that to MKL, which on some CPUs runs it on a single core: on this project's
2-core AMD EPYC it reads the weights at 11.5 GB/s with 1 thread or 2, a third of the
machine's bandwidth (docs/cpu-inference.md, "row blocks"). The same weight viewed as
`blocks` blocks of rows (a view, no copy) through one batched matmul runs the blocks on
the cores at once, 1.6-2x faster there, and every output is the same dot product computed
by the same kernel.

"The same" is MKL's behaviour, not a promise, so `plan` checks it on this machine, once
per weight shape, against F.linear on the real weights: a shape whose outputs differ in
any bit keeps F.linear. fp32 only: bf16 goes through oneDNN, which already splits one row's
matmul across the cores (blocks gained nothing there).
"""
import torch
import torch.nn.functional as F
from torch import nn


ALIGN = 16  # blocks start at multiples of 16 rows (see RowBlocks)


class RowBlocks:
    """y = x W^T for x [..., K] holding one row, W [N, K] as `blocks` blocks of rows.

    Block i starts at row i * stride, stride a multiple of ALIGN, and the last one ends at
    row N, so the blocks overlap by N - blocks * stride rows (computed twice, kept once).
    The alignment matters: MKL computes a block's last rows past a multiple of 4 by another
    path, so blocks starting elsewhere give a few outputs that differ in their last bits
    (measured on SmolLM2's 49,157-row head); aligned, every row keeps its offset modulo 16.
    """

    def __init__(self, weight, blocks):
        n, k = weight.shape
        self.n, self.k = n, k
        self.stride = (n // blocks) // ALIGN * ALIGN
        self.size = n - (blocks - 1) * self.stride
        self.blocks = weight.as_strided((blocks, self.size, k), (self.stride * k, k, 1)).transpose(1, 2)

    def __call__(self, x):
        lead = x.shape[:-1]
        row = x.reshape(1, 1, self.k).expand(self.blocks.size(0), 1, self.k)
        out = torch.bmm(row, self.blocks)  # [blocks, 1, size]
        if self.size > self.stride:
            out = torch.cat([out[:-1, :, : self.stride].reshape(-1), out[-1, 0]])
        return out.reshape(*lead, self.n)


def _splittable(module) -> bool:
    return (type(module) is nn.Linear and module.bias is None and module.weight.dtype == torch.float32
            and module.weight.is_contiguous() and module.weight.device.type == "cpu")


@torch.inference_mode()
def _exact(module, split, trials=2) -> bool:
    """Whether `split` gives F.linear's outputs bit for bit on `module`'s own weights."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(trials):
        x = torch.randn(1, 1, module.in_features, generator=generator)
        if not torch.equal(split(x), F.linear(x, module.weight)):
            return False
    return True


def plan(modules, threads=None):
    """{id(module): RowBlocks} for the fp32 Linear layers (no bias, at least ALIGN rows a
    block) whose one-row products the blocks compute exactly here; {} on one thread. Each
    shape is checked once, on the first module of that shape."""
    threads = torch.get_num_threads() if threads is None else threads
    if threads < 2:
        return {}
    verdict, out = {}, {}
    for module in modules:
        if not _splittable(module) or module.out_features < ALIGN * threads:
            continue
        split = RowBlocks(module.weight, threads)
        shape = tuple(module.weight.shape)
        if shape not in verdict:
            verdict[shape] = _exact(module, split)
        if verdict[shape]:
            out[id(module)] = split
    return out
