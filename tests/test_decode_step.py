"""decode_step.py: a decoding step of a plain Llama through our step computes what
transformers' forward computes, bit for bit (`torch.equal`), in every --cpu-dtype mode, with
and without padding; the Llama family's kin keep transformers' forward.

Each test decodes the same prefix twice, once with the step and once with it switched off
(`heads._step = None`: transformers' body), and compares logits, hidden states and every
layer's keys/values. A tiny random Llama with weights drawn wide (its logits spread like a
trained model's), 4 query heads over 2 key/value heads (grouped attention, as SmolLM2's 9
over 3).
"""
import pytest
import torch

from parlai_transfertransfo.recipe import cpu_dtype, decode_step, row_blocks
from parlai_transfertransfo.recipe.double_heads import DoubleHeads
from parlai_transfertransfo.recipe.prefix import left_pad

STEPS = 6


def llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    tie_word_embeddings=True, initializer_range=0.2)
    config = LlamaConfig(**{**settings, **overrides})
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def heads_in(mode, **overrides):
    return cpu_dtype.convert(DoubleHeads(llama(**overrides)).eval(), mode)


def decode(heads, prefix, tokens, use_step):
    """Logits, hidden states and keys/values of each step of feeding `tokens` [STEPS, B]."""
    heads.__dict__.pop("_step", None)
    if not use_step:
        heads._step = None
    out = []
    with torch.inference_mode():
        for column in tokens:
            ids = column[:, None]
            logits, hidden, prefix = heads.extend(prefix, ids, torch.full_like(ids, 7))
            out.append((logits, hidden, prefix.kv))
    assert (heads._step is not None) == use_step
    return out


def assert_same(with_step, without):
    for (logits, hidden, kv), (ref_logits, ref_hidden, ref_kv) in zip(with_step, without):
        assert torch.equal(logits, ref_logits) and torch.equal(hidden, ref_hidden)
        for (k, v), (ref_k, ref_v) in zip(kv, ref_kv):
            assert torch.equal(k, ref_k) and torch.equal(v, ref_v)


def contexts(heads, rows):
    ids, mask = left_pad(rows, 0)
    with torch.inference_mode():
        return heads.encode_prefix(ids, torch.full_like(ids, 5), mask)


ROWS = [[11, 12, 13, 14, 15, 16, 17], [21, 22, 23]]  # the second row left-padded


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8"])
def test_step_is_transformers_forward_bit_for_bit(mode):
    heads = heads_in(mode)
    assert decode_step.supports(heads.lm)
    tokens = torch.randint(1, 300, (STEPS, 2), generator=torch.Generator().manual_seed(1))
    for rows in (ROWS, ROWS[:1]):  # padded (a mask), and one full row (no mask: grouped SDPA)
        prefix = contexts(heads, rows)
        batch_tokens = tokens[:, : len(rows)]
        assert_same(decode(heads, prefix, batch_tokens, True), decode(heads, prefix, batch_tokens, False))


@pytest.mark.parametrize("threads", [2, 3])
def test_one_row_in_row_blocks_is_transformers_forward_bit_for_bit(threads):
    """One row with fp32 weights: every projection of at least 16 rows a core, and the LM
    head (301 rows: blocks that overlap), run as row blocks on `threads` cores
    (row_blocks.py), and change no bit."""
    heads = heads_in("fp32", vocab_size=301)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prefix = contexts(heads, ROWS[:1])
        tokens = torch.randint(1, 301, (STEPS, 1), generator=torch.Generator().manual_seed(3))
        with_blocks = decode(heads, prefix, tokens, True)
        step = heads._step
        wide = [(split, module) for splits, modules in zip(step.one_row, step.projections)
                for split, module in zip(splits, modules) if module.out_features >= row_blocks.ALIGN * threads]
        assert step.head is not None and len(wide) >= 5 * 2  # q, o, gate, up, down of both layers
        assert all(isinstance(split, row_blocks.RowBlocks) for split, _ in wide)
        assert_same(with_blocks, decode(heads, prefix, tokens, False))
    finally:
        torch.set_num_threads(previous)


def test_step_after_masked_columns_in_the_middle():
    """A prefix continued with right padding (candidates of unequal length, a persona cache)
    has masked columns between real ones; the step attends exactly as transformers does."""
    heads = heads_in("fp32")
    prefix = contexts(heads, ROWS)
    ids = torch.tensor([[31, 32, 33], [41, 0, 0]])
    with torch.inference_mode():
        _, _, prefix = heads.extend(prefix, ids, torch.full_like(ids, 6), torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert not bool(prefix.mask.all())
    tokens = torch.randint(1, 300, (STEPS, 2), generator=torch.Generator().manual_seed(2))
    assert_same(decode(heads, prefix, tokens, True), decode(heads, prefix, tokens, False))


def test_a_prefix_continued_twice_stays_as_it_was():
    """The step writes keys in place only where no other continuation has: decoding two
    different tokens from one prefix gives what each gives alone."""
    heads = heads_in("fp32")
    prefix = contexts(heads, ROWS)
    first = decode(heads, prefix, torch.tensor([[5, 6]]), True)
    decode(heads, prefix, torch.tensor([[8, 9]]), True)
    again = decode(heads, prefix, torch.tensor([[5, 6]]), True)
    assert_same(again, first)


def test_kin_and_training_keep_transformers_forward():
    """Configs the step does not mirror, and a model in training mode, are refused."""
    assert not decode_step.supports(llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}))
    assert not decode_step.supports(llama(hidden_act="gelu"))
    assert not decode_step.supports(llama().train())
    from transformers import Qwen3Config, Qwen3ForCausalLM

    qwen3 = Qwen3ForCausalLM(Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    assert not decode_step.supports(qwen3.eval())
