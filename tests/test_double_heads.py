"""DoubleHeads: the cached paths (encode_prefix / extend / select / score_candidates) give
what the plain full forward gives, for GPT-2, OpenAI GPT and Llama, whatever the batch."""
import pytest
import torch
import torch.nn.functional as F

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.architectures import check_supported
from parlai_transfertransfo.recipe.double_heads import DoubleHeads

SPEAKER1, SPEAKER2 = 50000, 50001  # any two ids in the vocab stand in for the speaker tokens
BACKBONES = ["gpt2", "openai-gpt", "llama"]
_LOADED = {}


def load(kind, path):
    from transformers import GPT2DoubleHeadsModel, LlamaForCausalLM, OpenAIGPTDoubleHeadsModel

    classes = {"gpt2": GPT2DoubleHeadsModel, "openai-gpt": OpenAIGPTDoubleHeadsModel}
    cls = classes.get(kind, LlamaForCausalLM)
    if kind not in _LOADED:
        torch.manual_seed(0)  # the Llama MC head is ours, initialised here
        _LOADED[kind] = DoubleHeads(cls.from_pretrained(path)).eval()
    return _LOADED[kind]


FIXTURES = {"gpt2": "tiny_gpt2_dir", "openai-gpt": "tiny_openai_gpt_dir", "llama": "tiny_llama_dir"}


@pytest.fixture(params=BACKBONES)
def model(request):
    return load(request.param, request.getfixturevalue(FIXTURES[request.param]))


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def context(length, seed):
    """A context ending with speaker2's turn: ids and the speaker ids as token types."""
    ids = torch.randint(0, 50000, (length,), generator=torch.Generator().manual_seed(seed))
    types = torch.full((length,), SPEAKER2)
    types[: length // 2] = SPEAKER1
    return ids, types


def candidate(length, seed):
    """A reply: speaker1's token, then words; all typed speaker1."""
    ids = torch.randint(0, 50000, (length,), generator=torch.Generator().manual_seed(1000 + seed))
    ids[0] = SPEAKER1
    return ids, torch.full((length,), SPEAKER1)


def left_pad(seqs):
    """[(ids, types)] -> left-padded ids, types, mask [B, P]; pads get arbitrary junk ids
    so that any leak of padding into the results would show."""
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), 123)
    types = torch.full((len(seqs), width), 456)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (i, t) in enumerate(seqs):
        ids[row, width - len(i):], types[row, width - len(i):], mask[row, width - len(i):] = i, t, 1
    return ids, types, mask


def right_pad(seqs):
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), 789)
    types = torch.full((len(seqs), width), 321)
    for row, (i, t) in enumerate(seqs):
        ids[row, : len(i)], types[row, : len(i)] = i, t
    return ids, types, torch.tensor([len(i) for i, _ in seqs])


def full_sequence_scores(model, ctx, cand):
    """The training-time view: one (context + reply) sequence, LM labels on the reply after
    its speaker token and on <eos>, MC read at the last token. Returns (mc, token nlls)."""
    ids = torch.cat([ctx[0], cand[0]])[None]
    types = torch.cat([ctx[1], cand[1]])[None]
    lm_logits, mc_logits = model(ids, types, torch.tensor([ids.size(1) - 1]))
    labels = torch.full_like(ids, -100)
    labels[0, len(ctx[0]) + 1:] = cand[0][1:]
    nll = F.cross_entropy(lm_logits[0, :-1], labels[0, 1:], reduction="none")
    return mc_logits[0], nll[len(ctx[0]):]


def test_cached_candidate_scores_equal_full_sequence_scores(model):
    contexts = [context(9, 0), context(4, 1)]
    cands = [candidate(n, s) for s, n in enumerate([5, 2, 7, 1, 3])]
    owner = torch.tensor([0, 1, 1, 0, 0])
    prefix = model.encode_prefix(*left_pad(contexts))
    mc, token_nll = model.score_candidates(prefix, owner, *right_pad(cands))

    assert mc.shape == (5,) and token_nll.shape == (5, 7)
    for i, cand in enumerate(cands):
        want_mc, want_nll = full_sequence_scores(model, contexts[owner[i]], cand)
        n = len(cand[0])
        torch.testing.assert_close(mc[i], want_mc, atol=1e-5, rtol=0)
        torch.testing.assert_close(token_nll[i, : n - 1], want_nll, atol=1e-5, rtol=0)
        assert (token_nll[i, n - 1:] == 0).all()  # last real token and padding score nothing
    mc_only, no_nll = model.score_candidates(prefix, owner, *right_pad(cands), nll=False)
    assert no_nll is None
    torch.testing.assert_close(mc_only, mc, atol=1e-6, rtol=0)


def test_token_nll_sums_to_the_training_lm_loss(model):
    ctx, cand = context(6, 3), candidate(4, 3)
    prefix = model.encode_prefix(*left_pad([ctx]))
    _, token_nll = model.score_candidates(prefix, torch.tensor([0]), *right_pad([cand]))
    ids = torch.cat([ctx[0], cand[0]])[None]
    lm_logits, _ = model(ids, torch.cat([ctx[1], cand[1]])[None])
    labels = torch.full_like(ids, -100)
    labels[0, 7:] = cand[0][1:]  # reply words and <eos>, not the speaker token
    loss = F.cross_entropy(lm_logits[0, :-1], labels[0, 1:], reduction="sum")
    torch.testing.assert_close(token_nll.sum(), loss, atol=1e-4, rtol=0)


def test_left_padded_batch_scores_like_each_context_alone(model):
    contexts = [context(n, 10 + n) for n in (3, 12, 7, 1)]
    cands = [candidate(n, s) for s, n in enumerate([4, 6, 2, 5])]
    owner = torch.tensor([0, 1, 2, 3])
    batch = model.encode_prefix(*left_pad(contexts))
    mc, nll = model.score_candidates(batch, owner, *right_pad(cands))

    for i, ctx in enumerate(contexts):
        alone = model.encode_prefix(*left_pad([ctx]))
        mc1, nll1 = model.score_candidates(alone, torch.tensor([0]), *right_pad([cands[i]]))
        n = len(cands[i][0])
        torch.testing.assert_close(mc[i], mc1[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(nll[i, :n], nll1[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.last_logits[i], alone.last_logits[0], atol=1e-5, rtol=0)


def test_training_from_shared_contexts_equals_the_recipes_whole_sequences(model):
    """recipe_losses runs each context once and its candidates as continuations; the recipe
    runs every (context + candidate) as one sequence. Same losses, same gradients."""
    contexts = [context(9, 20), context(5, 21)]
    cands = [candidate(n, 20 + s) for s, n in enumerate([4, 6, 3, 5, 2])]
    owner, gold = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([2, 4])
    params = [p for p in model.parameters()]

    def loss_and_grads(fn):
        model.zero_grad()
        with torch.enable_grad():
            nll, mc = fn()
            (nll.sum() + mc.sum()).backward()
        grads = [p.grad.clone() for p in params if p.grad is not None]
        model.zero_grad()
        return nll.detach(), mc.detach(), grads

    def shared():
        token_nll, argmax, mc = model.recipe_losses(
            *left_pad(contexts), owner, *right_pad(cands)[:2], right_pad(cands)[2], gold
        )
        assert token_nll.shape == argmax.shape == (2, 5) and mc.shape == (5,)
        assert (argmax[0, 3:] == -100).all() and (token_nll[0, 3:] == 0).all()  # 4 tokens: 3 labels
        return token_nll[token_nll.ne(0)], mc

    def whole():
        mcs, nlls = zip(*(full_sequence_scores(model, contexts[owner[i]], cands[i]) for i in range(5)))
        return torch.cat([nlls[i] for i in gold.tolist()]), torch.stack(mcs)

    got, want = loss_and_grads(shared), loss_and_grads(whole)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=0)
    assert len(got[2]) == len(want[2]) > 0
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def greedy_cached(model, prefix, steps):
    """Greedy decoding one extend() per token: (tokens [B, steps], logits [B, steps, V])."""
    tokens, seen = [], []
    logits = prefix.last_logits
    for _ in range(steps):
        token = logits.argmax(-1)
        tokens.append(token)
        seen.append(logits)
        token = token[:, None]
        step_logits, _, prefix = model.extend(prefix, token, torch.full_like(token, SPEAKER1))
        logits = step_logits[:, -1]
    return torch.stack(tokens, 1), torch.stack(seen, 1)


def greedy_uncached(model, ctx, steps):
    """Greedy decoding re-running the whole unpadded sequence for every token."""
    ids, types, seen = ctx[0].clone(), ctx[1].clone(), []
    for _ in range(steps):
        lm_logits, _ = model(ids[None], types[None])
        seen.append(lm_logits[0, -1])
        ids = torch.cat([ids, lm_logits[0, -1].argmax()[None]])
        types = torch.cat([types, torch.tensor([SPEAKER1])])
    return ids[len(ctx[0]):], torch.stack(seen)


@pytest.mark.parametrize("kind", BACKBONES)
def test_cached_greedy_decoding_equals_full_rerun_for_20_tokens(kind, request):
    model = load(kind, request.getfixturevalue(FIXTURES[kind]))
    contexts = [context(5, 20), context(11, 21)]
    # each context ends with the reply's speaker token, as the agent hands it over
    contexts = [(torch.cat([i, torch.tensor([SPEAKER1])]), torch.cat([t, torch.tensor([SPEAKER1])]))
                for i, t in contexts]
    cached, cached_logits = greedy_cached(model, model.encode_prefix(*left_pad(contexts)), 20)
    for row, ctx in enumerate(contexts):
        tokens, logits = greedy_uncached(model, ctx, 20)
        assert cached[row].tolist() == tokens.tolist()
        # random tiny models repeat tokens, so the logits are compared too, step by step
        torch.testing.assert_close(cached_logits[row], logits, atol=1e-4, rtol=0)


def test_gpt2_and_llama_decode_from_the_cache_not_by_re_encoding(model):
    prefix = model.encode_prefix(*left_pad([context(6, 30)]))
    if model.kind == "openai-gpt":  # no KV cache in transformers 5: the tokens are kept instead
        assert prefix.kv is None and prefix.ids.shape == (1, 6)
        return
    assert prefix.ids is None and len(prefix.kv) == 2
    _, _, longer = model.extend(prefix, torch.tensor([[7]]), torch.tensor([[SPEAKER1]]))
    assert longer.kv[0][0].shape[-2] == 7  # one new key appended, the six cached ones kept
    assert torch.equal(longer.kv[0][0][..., :6, :], prefix.kv[0][0])


def test_select_repeats_and_reorders_rows(model):
    contexts = [context(4, 40), context(8, 41)]
    prefix = model.encode_prefix(*left_pad(contexts))
    picked = model.select(prefix, torch.tensor([1, 0, 1]))
    step = torch.tensor([[5, 6], [7, 8], [9, 10]])
    logits, _, _ = model.extend(picked, step, torch.full_like(step, SPEAKER1))

    assert picked.mask.tolist() == [[1] * 8, [0] * 4 + [1] * 4, [1] * 8]
    for row, source in enumerate([1, 0, 1]):
        alone = model.encode_prefix(*left_pad([contexts[source]]))
        want, _, _ = model.extend(alone, step[row:row + 1], torch.full_like(step[:1], SPEAKER1))
        torch.testing.assert_close(logits[row], want[0], atol=1e-5, rtol=0)


def test_scoring_then_decoding_from_one_prefix_leaves_it_unchanged(model):
    prefix = model.encode_prefix(*left_pad([context(5, 50), context(9, 51)]))
    kv_before = None if prefix.kv is None else [k.clone() for k, _ in prefix.kv]
    decoded_first, logits_first = greedy_cached(model, prefix, 6)
    cands = right_pad([candidate(3, 0), candidate(5, 1), candidate(4, 2)])
    owner = torch.tensor([1, 0, 0])
    scores_first = model.score_candidates(prefix, owner, *cands)

    decoded_again, logits_again = greedy_cached(model, prefix, 6)
    assert decoded_again.tolist() == decoded_first.tolist()
    torch.testing.assert_close(logits_again, logits_first, atol=0, rtol=0)
    scores_again = model.score_candidates(prefix, owner, *cands)
    torch.testing.assert_close(scores_again, scores_first, atol=0, rtol=0)
    if kv_before is not None:
        assert all(torch.equal(k, prefix.kv[i][0]) for i, k in enumerate(kv_before))
    assert prefix.mask.size(1) == 9 and prefix.next_position.tolist() == [5, 9]


def test_full_forward_reads_mc_at_eos_and_ignores_right_padding(model):
    ids, types = context(7, 60)
    padded_ids = torch.stack([torch.cat([ids, torch.tensor([1, 2, 3])])] * 2)[None]  # [1, 2, 10]
    padded_types = torch.stack([torch.cat([types, torch.tensor([4, 5, 6])])] * 2)[None]
    lm_logits, mc_logits = model(padded_ids, padded_types, torch.tensor([[6, 6]]))
    alone_lm, alone_mc = model(ids[None], types[None], torch.tensor([6]))

    assert lm_logits.shape == (1, 2, 10, model.vocab_size) and mc_logits.shape == (1, 2)
    torch.testing.assert_close(mc_logits[0, 1], alone_mc[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(lm_logits[0, 0, :7], alone_lm[0], atol=1e-5, rtol=0)


def test_token_types_reach_the_model(model):
    ids, types = context(6, 70)
    with_types, mc_types = model(ids[None], types[None], torch.tensor([5]))
    without, mc_without = model(ids[None], None, torch.tensor([5]))
    assert not torch.allclose(with_types, without, atol=1e-3)
    assert not torch.allclose(mc_types, mc_without, atol=1e-6)


def test_sizes_and_resizing(model):
    assert model.max_positions == 128
    assert model.vocab_size == 50257
    model.resize_token_embeddings(50257)  # already that size: nothing happens
    assert model.vocab_size == 50257


def test_resize_token_embeddings_grows_the_vocabulary(tiny_gpt2_dir):
    from transformers import GPT2DoubleHeadsModel

    model = DoubleHeads(GPT2DoubleHeadsModel.from_pretrained(tiny_gpt2_dir)).eval()
    model.resize_token_embeddings(50262)  # + <bos> <eos> <speaker1> <speaker2> <pad>
    assert model.vocab_size == 50262 and model.config.vocab_size == 50262
    lm_logits, _ = model(torch.tensor([[50261, 5, 50260]]), torch.tensor([[50259, 50259, 50260]]))
    assert lm_logits.shape == (1, 3, 50262)


def test_positions_past_the_model_limit_are_a_clear_error(tiny_gpt2_dir):
    model = load("gpt2", tiny_gpt2_dir)
    ids, types = context(128, 80)
    prefix = model.encode_prefix(ids[None], types[None], torch.ones(1, 128, dtype=torch.long))
    with pytest.raises(TransfertransfoError, match="128 positions"):
        model.extend(prefix, torch.tensor([[1]]), torch.tensor([[SPEAKER1]]))


def test_unsupported_architecture_names_it_and_the_supported_ones():
    from transformers import BertConfig

    with pytest.raises(TransfertransfoError) as error:
        check_supported(BertConfig())
    assert "unsupported architecture 'bert'" in str(error.value)
    assert "gpt2, openai-gpt, llama" in str(error.value)


def test_rows_that_fit_score_even_when_the_padded_batch_is_wider_than_the_positions(model):
    """A long context beside a short one with a long candidate: each row fits the model's
    128 positions, the padded width (context + candidate) does not."""
    contexts = [context(100, 7), context(10, 8)]
    cands = [candidate(3, 1), candidate(100, 2)]
    owner = torch.tensor([0, 1])
    batch = model.encode_prefix(*left_pad(contexts))
    mc, nll = model.score_candidates(batch, owner, *right_pad(cands))
    for i in range(2):
        want_mc, want_nll = full_sequence_scores(model, contexts[i], cands[i])
        n = len(cands[i][0])
        torch.testing.assert_close(mc[i], want_mc, atol=1e-4, rtol=0)
        torch.testing.assert_close(nll[i, : n - 1], want_nll, atol=1e-4, rtol=0)
