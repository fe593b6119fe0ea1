"""row_blocks.py: a one-row fp32 matmul as blocks of the weight's rows through one bmm.

The blocks are used only where this machine's kernels give F.linear's outputs bit for bit
(`plan` checks each weight shape once); these tests check that what `plan` keeps is exact
on inputs it never saw, that a split which is not exact is refused, and which layers are
never split. The decoding step with blocks against transformers' forward:
tests/test_decode_step.py.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parlai_transfertransfo.recipe import int8_linear, row_blocks

# SmolLM2's shapes (q/o, k/v, gate/up, down) and heads of odd sizes: blocks that overlap
SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49157, 576), (301, 64), (1000, 96)]


def linear(out_features, in_features, seed=0, **kwargs):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=False, **kwargs)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_kept_blocks_are_f_linear_bit_for_bit_on_new_rows(threads):
    modules = [linear(n, k, seed) for seed, (n, k) in enumerate(SHAPES)]
    plan = row_blocks.plan(modules, threads=threads)
    assert plan, "no shape kept: the blocks would never run"
    generator = torch.Generator().manual_seed(123)
    with torch.inference_mode():
        for module in modules:
            if id(module) not in plan:
                continue
            for shape in ([1, 1, module.in_features], [1, module.in_features]):  # a step; a head's row
                x = torch.randn(*shape, generator=generator) * 3
                out = plan[id(module)](x)
                assert out.shape == (*shape[:-1], module.out_features)
                assert torch.equal(out, F.linear(x, module.weight))


def test_overlapping_blocks_cover_every_row_once():
    """49,157 rows in 2 aligned blocks: 24,576 apart, 24,581 long; row r of the output is
    row r of the weight times x (checked with a one-hot x: the weight's column itself)."""
    weight = torch.arange(49157 * 4, dtype=torch.float32).reshape(49157, 4)
    split = row_blocks.RowBlocks(weight, 2)
    assert (split.stride, split.size) == (24576, 24581)
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(split(x), weight[:, 1][None])


def test_a_split_that_is_not_exact_is_refused(monkeypatch):
    exact = row_blocks.RowBlocks.__call__
    monkeypatch.setattr(row_blocks.RowBlocks, "__call__", lambda self, x: exact(self, x) * (1 + 2 ** -20))
    assert row_blocks.plan([linear(576, 576)], threads=2) == {}


def test_what_is_never_split():
    torch.manual_seed(0)
    with_bias = nn.Linear(576, 576)
    bf16 = linear(576, 576, dtype=torch.bfloat16)
    int8 = int8_linear.Int8Linear.from_module(linear(576, 576))
    narrow = linear(16, 576)  # under ALIGN rows a block
    assert row_blocks.plan([with_bias, bf16, int8, narrow], threads=2) == {}
    assert row_blocks.plan([linear(576, 576)], threads=1) == {}  # one core: nothing to gain
