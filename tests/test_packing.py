"""Packed rows (packing.py): contexts and candidates of very different lengths, one pass, no
padding inside a row, the same scores, losses and gradients as the previous cached path and
as the recipe's whole sequences; and the agent's ranking on ragged, bad batches."""
import pytest
import torch
from parlai.core.message import Message

from parlai_transfertransfo.agent import ranking
from parlai_transfertransfo.recipe.packing import first_fit_rows, length_groups, pack
from test_agent import first_example, make_agent
from test_double_heads import FIXTURES, candidate, context, full_sequence_scores, left_pad, load, right_pad

BACKBONES = ["gpt2", "openai-gpt", "llama"]


@pytest.fixture(params=BACKBONES)
def model(request):
    return load(request.param, request.getfixturevalue(FIXTURES[request.param]))


def ragged_batch():
    """Contexts of 60, 3, 17 and 1 tokens (the last owns no candidate) and candidates of 2 to
    40 tokens, owners interleaved."""
    contexts = [context(n, 100 + n) for n in (60, 3, 17, 1)]
    cands = [candidate(n, 200 + s) for s, n in enumerate([2, 40, 5, 1, 12, 3, 25])]
    owner = torch.tensor([1, 0, 2, 1, 0, 2, 1])
    return contexts, cands, owner


def losses(model, path, contexts, cands, owner, lm_rows):
    model.candidate_path = path
    try:
        return model.recipe_losses(*left_pad(contexts), owner, *right_pad(cands), lm_rows)
    finally:
        model.candidate_path = "packed"


def test_rows_hold_each_context_once_and_no_padding_but_at_their_end():
    contexts, cands, owner = ragged_batch()
    cands[6][0][0] = 7  # context 1's candidates start differently: each runs its own start
    rows = pack(*left_pad(contexts), owner, *right_pad(cands))
    # examples: 60+40+12 = 112, 3+2+1+25 = 31, 17+5+3 = 25; context 3 (no candidate) left out
    assert rows.tokens == 112 + 31 + 25
    assert rows.ids.shape == (2, 112)  # the two short examples share the second row
    # row 1: 56 real tokens, then 56 of padding that nothing real sees and that sees nothing real
    assert not rows.allowed[1, :56, 56:].any() and not rows.allowed[1, 56:, :56].any()
    assert rows.allowed[1, 55, :56].any() and (rows.ids[1, 56:] == 0).all()
    # the candidates' tokens sit where the index says, in their order, after their context
    for i, (ids, _) in enumerate(cands):
        where = rows.cand_index[i, : len(ids)]
        assert rows.ids.flatten()[where].tolist() == ids.tolist()
        assert (rows.cand_index[i, len(ids):] == -1).all()
        assert rows.positions.flatten()[where].tolist() == list(range(len(contexts[owner[i]][0]), len(contexts[owner[i]][0]) + len(ids)))
    # a candidate token sees its context and itself so far, nothing of another candidate
    first, second = rows.cand_index[1, 5], rows.cand_index[4, 0]  # both continue context 0
    assert rows.allowed.flatten(0, 1)[second].sum() == 60 + 1
    assert not rows.allowed.flatten(0, 1)[second].view(-1)[first % 112]


def test_a_start_token_all_candidates_share_runs_once_after_the_context():
    """The recipe's candidates all start with `<speaker1>`, at the position after the context:
    it runs once per context, and every candidate's first index points at it."""
    contexts, cands, owner = ragged_batch()
    rows = pack(*left_pad(contexts), owner, *right_pad(cands))
    assert rows.tokens == (60 + 1 + 39 + 11) + (3 + 1 + 1 + 0 + 24) + (17 + 1 + 4 + 2)
    flat = rows.allowed.flatten(0, 1)
    for i, (ids, _) in enumerate(cands):
        n, where = len(contexts[owner[i]][0]), rows.cand_index[i, : len(ids)]
        assert rows.ids.flatten()[where].tolist() == ids.tolist()
        assert rows.positions.flatten()[where].tolist() == list(range(n, n + len(ids)))
        assert where[0] == rows.cand_index[(owner == owner[i]).nonzero()[0, 0], 0]  # one start per context
        assert [int(flat[w].sum()) for w in where] == [n + 1 + t for t in range(len(ids))]
    assert rows.ctx_index.shape == left_pad(contexts)[0].shape


def test_examples_go_into_passes_by_length_band():
    """Examples of 110, 100, 20 and 22 tokens (context + candidates), one without candidates:
    two bands, each padded by at most 10%; at most MAX_PASSES bands."""
    mask = torch.zeros(5, 100, dtype=torch.long)
    for i, n in enumerate([100, 90, 10, 12, 5]):
        mask[i, 100 - n:] = 1
    owner, lengths = torch.tensor([0, 1, 2, 3]), torch.tensor([10, 10, 10, 10])
    groups = length_groups(mask, owner, lengths)
    assert [(c.tolist(), n.tolist()) for c, n in groups] == [([0, 1], [0, 1]), ([2, 3], [2, 3])]
    assert len(length_groups(mask, owner, lengths, slack=0.0)) == 4
    assert [c.tolist() for c, _ in length_groups(mask, owner, lengths, slack=0.0, max_groups=2)] == [[0], [1, 2, 3]]
    # a CPU's cap on a pass's padded tokens: 110 + 100 padded to 220 > 200; no cap on the passes
    assert [c.tolist() for c, _ in length_groups(mask, owner, lengths, max_groups=1, max_tokens=200)] == [[0], [1], [2, 3]]


def test_first_fit_fills_rows_up_to_the_longest_item():
    assert first_fit_rows([5, 9, 4, 3], 9) == ([1, 0, 1, 2], [0, 0, 5, 0], 9)
    assert first_fit_rows([], 0) == ([], [], 0)


def test_packed_scores_equal_the_cached_path_and_the_whole_sequences(model):
    contexts, cands, owner = ragged_batch()
    every = torch.arange(len(cands))
    with torch.no_grad():
        packed = losses(model, "packed", contexts, cands, owner, every)
        cached = losses(model, "cached", contexts, cands, owner, every)
        for got, want in zip(packed, cached):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        nll, _, mc = packed
        for i, cand in enumerate(cands):
            want_mc, want_nll = full_sequence_scores(model, contexts[owner[i]], cand)
            torch.testing.assert_close(mc[i], want_mc, atol=1e-5, rtol=0)
            torch.testing.assert_close(nll[i, : len(cand[0]) - 1], want_nll, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_packed_training_losses_and_gradients_equal_the_cached_path(kind, request):
    model = load(kind, request.getfixturevalue(FIXTURES[kind]))
    contexts, cands, owner = ragged_batch()
    gold = torch.tensor([4, 6, 5])  # one reply per context that owns candidates

    def run(path):
        model.zero_grad()
        nll, argmax, mc = losses(model, path, contexts, cands, owner, gold)
        (nll.sum() + mc.logsumexp(0)).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        return nll.detach(), argmax, mc.detach(), grads

    packed, cached = run("packed"), run("cached")
    for got, want in zip(packed[:3], cached[:3]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert len(packed[3]) == len(cached[3]) > 0
    for got, want in zip(packed[3], cached[3]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# --- the agent --------------------------------------------------------------------------------
def examples_with(tail):
    """Real ConvAI2 messages of the shipped file, with tail(i, message) applied to each."""
    out = []
    for i in range(3):
        msg = dict(first_example())
        msg["text"] = msg["text"] + " " + "and more " * i  # three different contexts
        out.append(Message(tail(i, msg)))
    return out


def ranked(agent, messages):
    out = []
    for m in messages:
        agent.reset()
        out.append(agent.observe(Message(m)))
    agent.reset()
    return agent.batch_act(out)


@pytest.fixture(scope="module")
def gpt2_agent(tiny_gpt2_dir, tmp_path_factory):
    return make_agent(tiny_gpt2_dir, tmp_path_factory.mktemp("agent"), "--skip-generation", "true", "-bs", 3)


def test_ranking_runs_the_lm_head_only_on_the_gold_reply_tokens(gpt2_agent):
    """hits@1 alone reads no LM logits at all; with eval_labels, ppl needs the gold reply's
    tokens (its words and <eos>) and nothing else."""
    rows = []
    head = gpt2_agent._double_heads().lm.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    try:
        example = first_example()
        ranked(gpt2_agent, [{k: v for k, v in example.items() if k != "eval_labels"}])
        assert rows == []
        ranked(gpt2_agent, [example])
        assert rows == [len(gpt2_agent.dict.txt2vec(example["eval_labels"][0])) + 1]
    finally:
        handle.remove()


def long_candidate():
    return "so tell me more about it " * 60  # ~360 tokens, past the tiny model's 128 positions


@pytest.mark.parametrize("first_has_candidates", [True, False])
def test_a_ragged_batch_ranks_every_example_as_it_ranks_alone(first_has_candidates, gpt2_agent, monkeypatch):
    """One example without candidates (or with its 20), one with 100 (an empty one among
    them), one with a candidate longer than the model's positions (cut, with a note): no
    crash, every example ranks exactly its own candidates, as it does alone."""
    pool = [c for m in [first_example()] for c in m["label_candidates"]]

    def tail(i, msg):
        if i == 0 and not first_has_candidates:
            del msg["label_candidates"]
        elif i == 1:
            msg["label_candidates"] = msg["label_candidates"] + [""] + [f"{c} {k}" for k in range(4) for c in pool][:79]
        elif i == 2:
            msg["label_candidates"] = [long_candidate()] + msg["label_candidates"][1:]
        return msg

    messages = examples_with(tail)
    assert len(messages[1]["label_candidates"]) == 100
    notes = []
    monkeypatch.setattr(ranking, "warn_once", notes.append)
    together = ranked(gpt2_agent, messages)
    alone = [ranked(gpt2_agent, [m])[0] for m in messages]
    for m, got, want in zip(messages, together, alone):
        if "label_candidates" not in m:
            assert not got.get("text_candidates")
            continue
        assert sorted(got["text_candidates"]) == sorted(m["label_candidates"])
        assert got["text_candidates"] == want["text_candidates"]
        assert got["metrics"]["ppl"].value() == pytest.approx(want["metrics"]["ppl"].value(), rel=1e-5)
    assert any(n.startswith("label candidates cut to") for n in notes)
