"""Evaluation ranks the candidates, then generates a reply to the same contexts: the
generator continues the contexts' keys/values kept from the ranking pass instead of running
them again (parlai_model.TransfertransfoModel.forward / encoder). The same replies, beam
scores, rankings and ppl as running them again; decoding grows its cache in place
(kv_cache.py) without ever altering a Prefix that something else still holds."""
import pytest
import torch
from parlai.core.worlds import create_task

from parlai_transfertransfo.recipe.double_heads import DoubleHeads
from parlai_transfertransfo.recipe.persona_cache import PersonaCache
from test_double_heads import FIXTURES, SPEAKER1, context, left_pad, load
from test_persona_cache import agent_for, chats_file  # noqa: F401  (a fixture)


def evaluate(opt, agent, batchsize, reuse, cache=None):
    """eval_model's loop: (message, reply, beam texts and scores, top 5 candidates, ppl)
    per turn, sorted; and the rows of every `encode_prefix` call (the persona cache's
    misses included)."""
    heads = agent.model.double_heads
    heads.candidate_path = "packed" if reuse else "cached"  # the cached path keeps nothing
    agent.model.persona_cache = cache
    encoded = []
    original = DoubleHeads.encode_prefix

    def spy(self, ids, *args, **kwargs):
        encoded.append(ids.size(0))
        return original(self, ids, *args, **kwargs)

    world = create_task({**opt, "batchsize": batchsize}, agent)
    out = []
    DoubleHeads.encode_prefix = spy
    try:
        while not world.epoch_done():
            world.parley()
            for acts in [w.get_acts() for w in world.worlds] if batchsize > 1 else [world.get_acts()]:
                if acts[0].get("text") is not None:
                    act = acts[1]
                    out.append((acts[0]["text"], act["text"], [(t, float(s)) for t, s in act["beam_texts"]],
                                act["text_candidates"][:5], act["metrics"]["ppl"].value()))
    finally:
        DoubleHeads.encode_prefix = original
        heads.candidate_path = "packed"
    return sorted(out), encoded


def assert_same(a, b):
    assert [(x[0], x[1], [t for t, _ in x[2]], x[3]) for x in a] == [(x[0], x[1], [t for t, _ in x[2]], x[3]) for x in b]
    scores = lambda r: torch.tensor([s for x in r for s in [x[4]] + [s for _, s in x[2]]])  # noqa: E731
    torch.testing.assert_close(scores(a), scores(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone, inference", [("tiny_gpt2_dir", "greedy"), ("tiny_gpt2_dir", "beam"),
                                                 ("tiny_llama_dir", "greedy")])
def test_generation_from_the_ranked_contexts_equals_running_them_again(backbone, inference, chats_file,
                                                                       tmp_path, request):
    opt, agent = agent_for(request.getfixturevalue(backbone), chats_file, tmp_path, "--rank-candidates", "true",
                           "--inference", inference, "--beam-size", 3 if inference == "beam" else 1)
    reused, reused_encoded = evaluate(opt, agent, 3, reuse=True)
    again, again_encoded = evaluate(opt, agent, 3, reuse=False)
    assert len(reused) == 6 and len({r[1] for r in reused}) > 2  # the chats' turns, varied replies
    assert_same(reused, again)
    assert reused_encoded == []  # no context ran twice
    assert sum(again_encoded) == 2 * 6  # the cached path: each context for ranking, then for the generator
    alone, _ = evaluate(opt, agent, 1, reuse=True)  # and batched as alone
    assert_same(alone, again)
    cache = PersonaCache()  # the ranking pass continues each persona's cached start
    personas, persona_encoded = evaluate(opt, agent, 3, reuse=True, cache=cache)
    assert_same(personas, again)
    assert (cache.misses, cache.hits) == (3, 3)  # once per turn: the ranking pass's, kept for the generator
    assert persona_encoded == [3]  # the first batch's three new personas, nothing else


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_decoding_writes_in_place_and_never_alters_a_prefix_still_held(kind, request):
    model = load(kind, request.getfixturevalue(FIXTURES[kind]))
    step = lambda p, t: model.extend(p, torch.tensor([[t], [t + 1]]), torch.full((2, 1), SPEAKER1))  # noqa: E731
    with torch.no_grad():
        prefix = model.encode_prefix(*left_pad([context(5, 1), context(9, 2)]))
        _, _, one = step(prefix, 10)
        _, _, two = step(one, 20)
        assert two.kv[0][0].data_ptr() == one.kv[0][0].data_ptr()  # the same buffer, grown
        kept = [k.clone() for k, _ in two.kv]
        logits_three, _, three = step(one, 30)  # `one` continued a second time: a new buffer
        assert three.kv[0][0].data_ptr() != two.kv[0][0].data_ptr()
        assert all(torch.equal(k, two.kv[i][0]) for i, k in enumerate(kept))
        fresh = model.encode_prefix(*left_pad([context(5, 1), context(9, 2)]))
        _, _, fresh_one = step(fresh, 10)
        want, _, _ = step(fresh_one, 30)
        torch.testing.assert_close(logits_three, want, atol=1e-5, rtol=0)
    with torch.inference_mode():  # a server's cache, continued later by plain no-grad code
        served = model.encode_prefix(*left_pad([context(5, 1), context(9, 2)]))
    with torch.no_grad():
        logits, _, _ = step(served, 10)
        torch.testing.assert_close(logits, step(prefix, 10)[0], atol=1e-5, rtol=0)
    with torch.enable_grad():  # autograd on: concatenation, nothing written in place
        _, _, grad_two = step(one, 20)
        assert grad_two.kv[0][0].data_ptr() != two.kv[0][0].data_ptr()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_the_kept_contexts_are_the_encoders_own_across_passes_by_length(kind, request):
    """Contexts of 60, 3 and 17 tokens with candidates of 2 to 40: three passes by length
    band (packing.length_groups); each context's kept keys/values, positions and start
    logits equal the encoder's pass over `<context> <speaker1>`."""
    from test_packing import ragged_batch
    from test_double_heads import right_pad

    model = load(kind, request.getfixturevalue(FIXTURES[kind]))
    contexts, cands, owner = ragged_batch()
    contexts = contexts[:3]  # the fourth owns no candidate: nothing would be kept
    passes = []
    hook = model.lm.base_model.register_forward_hook(lambda m, a, out: passes.append(1))
    try:
        with torch.no_grad():
            *_, (prefix, start_hidden) = model.recipe_losses(*left_pad(contexts), owner, *right_pad(cands),
                                                            torch.tensor([4]), keep_contexts=True)
            prefix = model.with_last_logits(prefix, start_hidden)
            want = model.encode_prefix(*left_pad([(torch.cat([i, torch.tensor([SPEAKER1])]),
                                                   torch.cat([t, torch.tensor([SPEAKER1])])) for i, t in contexts]))
    finally:
        hook.remove()
    assert len(passes) == 1 + 3  # three bands, then the encoder's pass
    assert torch.equal(prefix.mask, want.mask) and torch.equal(prefix.next_position, want.next_position)
    real = want.mask.bool()
    for (k, v), (want_k, want_v) in zip(prefix.kv, want.kv):
        torch.testing.assert_close(k.transpose(1, 2)[real], want_k.transpose(1, 2)[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(v.transpose(1, 2)[real], want_v.transpose(1, 2)[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(prefix.last_logits, want.last_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_cached_start_continued_by_the_packed_pass_scores_as_the_whole_context(kind, request):
    """The persona cache's starts (20, 2 and 0 tokens of contexts of 60, 3 and 17) as the
    packed passes' past: the same losses, MC logits and kept contexts as the whole contexts."""
    from test_packing import ragged_batch
    from test_double_heads import right_pad

    model = load(kind, request.getfixturevalue(FIXTURES[kind]))
    contexts, cands, owner = ragged_batch()
    contexts = contexts[:3]
    starts = [(i[:n], t[:n]) for (i, t), n in zip(contexts, (20, 2, 0))]
    rests = [(i[n:], t[n:]) for (i, t), n in zip(contexts, (20, 2, 0))]
    lm_rows = torch.tensor([4, 0])
    with torch.no_grad():
        past = model.encode_prefix(*left_pad(starts))  # left-padded: each start right-aligned
        *got, (prefix, start_hidden) = model.recipe_losses(*left_pad(rests), owner, *right_pad(cands), lm_rows,
                                                          keep_contexts=True, past=past)
        *want, (want_prefix, want_hidden) = model.recipe_losses(*left_pad(contexts), owner, *right_pad(cands),
                                                               lm_rows, keep_contexts=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert prefix.next_position.tolist() == want_prefix.next_position.tolist() == [61, 4, 18]
    torch.testing.assert_close(start_hidden, want_hidden, atol=1e-5, rtol=0)
    for (k, v), (want_k, want_v) in zip(prefix.kv, want_prefix.kv):  # each row's real columns, in order
        for row in range(3):
            real, want_real = prefix.mask[row].bool(), want_prefix.mask[row].bool()
            torch.testing.assert_close(k[row][:, real], want_k[row][:, want_real], atol=1e-5, rtol=0)
            torch.testing.assert_close(v[row][:, real], want_v[row][:, want_real], atol=1e-5, rtol=0)
