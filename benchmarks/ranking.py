"""P2 hits@1 scoring of 20 label candidates, through `eval_model`'s code path (`batch_act` ->
`eval_step`, `--skip-generation true`), against the original ConvAI2 evaluation.

Two measurements:
- `run_real`: consecutive real ConvAI2 validation examples (the shipped dialogs' held-out
  last 100), at `-bs 1` and `-bs 16`, the agent's packed path and the previous cached path
  (`DoubleHeads.candidate_path`, every context run whole: no persona cache), beside the
  token-count limit for exactly those examples;
- `run`: one selected ~200-token context (the earlier, single-example row).

Baseline (`convai_evaluation.py`, `TransformerAgent.act` with eval_type hits@1): every
candidate becomes a full persona + history + candidate sequence, the 20 are padded into one
[1, 20, T] batch and run through the double-heads model; the MC logits rank them.
The agent runs the context once and scores the candidates as continuations of its cache.
Two agent sides: with `eval_labels` (what eval_model does: gold LM loss for ppl + ranking)
and with candidates only (ranking alone).
"""
import contextlib
import functools

import torch

from benchmarks.common import batchify, context_near, double_heads, interleaved, make_agent, message, observed
from parlai_transfertransfo.recipe import segments


def full_sequence_scores(agent, obs, device):
    """MC logit of every candidate, each run as a whole sequence (the original algorithm)."""
    heads, special = double_heads(agent), agent.special
    persona, history = obs["tt_persona"], obs["tt_history"]
    instances = [segments.build_instance(persona, history, agent._reply_vec(c), special)
                 for c in obs["label_candidates"]]
    width = max(len(i["input_ids"]) for i in instances)
    ids = torch.full((1, len(instances), width), special.pad, dtype=torch.long)
    types = torch.full_like(ids, special.pad)
    for j, inst in enumerate(instances):
        ids[0, j, : len(inst["input_ids"])] = torch.tensor(inst["input_ids"])
        types[0, j, : len(inst["token_type_ids"])] = torch.tensor(inst["token_type_ids"])
    mc = torch.tensor([[i["mc_token_ids"] for i in instances]])
    ids, types, mc = ids.to(device), types.to(device), mc.to(device)
    with torch.no_grad():
        if heads.kind == "gpt2":  # the bare transformers GPT2DoubleHeadsModel, as the original
            mc_logits = heads.lm(ids, token_type_ids=types, mc_token_ids=mc).mc_logits
        else:  # the same full forward (LM logits everywhere, MC head at <eos>) for Llama kin
            mc_logits = heads(ids, types, mc)[1]
    return mc_logits[0]


def token_counts(agent, obs):
    """(tokens the full-sequence side runs: 20 padded whole sequences; tokens of the context
    once plus each candidate once, what sharing the context can at best bring it down to)."""
    special = agent.special
    context = len(segments.build_prefix(obs["tt_persona"], obs["tt_history"], special)[0])
    replies = [len(agent._reply_vec(c)) + 2 for c in obs["label_candidates"]]  # <speaker1> .. <eos>
    return len(replies) * (context + max(replies)), context + sum(replies)


def run_real(model, workdir, device, reps, dialogs, n_examples=16):
    """Real examples, -bs 1 and -bs 16, packed and cached paths, and the token-count limit."""
    agent = make_agent(model, workdir, device, "--skip-generation", "true", "-bs", 16)
    agent.model.eval()
    heads = double_heads(agent)
    msgs = [message(d, t, "eval") for d in dialogs[-100:] for t in range(len(d[1]))][:n_examples]
    observations = [observed(agent, m) for m in msgs]
    full, shared = map(sum, zip(*(token_counts(agent, o) for o in observations)))

    personas = agent.model.persona_cache

    @contextlib.contextmanager
    def as_it_ran(path):  # the previous path ran every context whole: no persona cache
        heads.candidate_path = path
        agent.model.persona_cache = personas if path == "packed" else None
        try:
            yield
        finally:
            heads.candidate_path, agent.model.persona_cache = "packed", personas

    def rank(path, bs):  # eval_model's batches: every example's ranked candidates
        got = []
        with as_it_ran(path):
            for i in range(0, len(msgs), bs):
                out = agent.batch_act([observed(agent, m) for m in msgs[i:i + bs]])
                assert all(o.get("text_candidates") for o in out)
                got += [o["text_candidates"] for o in out]
        return got

    # Same computation first: both paths, both batch sizes, rank alike to 1e-4.
    scores = {(path, bs): rank(path, bs) for path in ("cached", "packed") for bs in (1, 16)}
    if len({str(v) for v in scores.values()}) != 1:
        raise AssertionError(f"P2 real {model}: the paths or batch sizes rank differently")
    theirs = full_sequence_scores(agent, observations[0], device).float()
    batch = batchify(agent, [observed(agent, msgs[0])])
    choices, ours = agent.rank_eval_label_candidates(batch, 1)
    ours = dict(zip(choices[0], ours[0].float().tolist()))
    diff = max(abs(ours[c] - float(s)) for c, s in zip(msgs[0]["label_candidates"], theirs))
    if diff > 1e-4:
        raise AssertionError(f"P2 real {model}: scores differ from the full sequences by {diff:.2e}")

    def full_sequences():
        for m in msgs:
            full_sequence_scores(agent, observed(agent, m), device)

    sides = {"full-sequence scoring (convai_evaluation.py)": full_sequences}
    for bs in (1, 16):
        sides[f"agent eval_step -bs {bs}: ppl + hits@1"] = functools.partial(rank, "packed", bs)
        sides[f"previous cached path -bs {bs}"] = functools.partial(rank, "cached", bs)
    times = interleaved(sides, reps, device)
    per_example = {k: [t / len(msgs) for t in v] for k, v in times.items()}
    return {"examples": len(msgs), "candidates": sum(len(m["label_candidates"]) for m in msgs),
            "limit": full / shared, "full_tokens": full, "shared_tokens": shared,
            "max_score_diff": diff, "times": per_example}


def run(model, workdir, device, reps, dialogs, context_tokens=200):
    agent = make_agent(model, workdir, device, "--skip-generation", "true", "--max-history", 4)
    agent.model.eval()
    dialog, turn, length = context_near(agent, dialogs, context_tokens)
    with_labels, cands_only = message(dialog, turn, "eval"), message(dialog, turn, "cands")

    # Same computation first: the agent's ranking scores equal the full-sequence MC logits.
    obs = observed(agent, with_labels)
    batch = batchify(agent, [obs])
    choices, scores = agent.rank_eval_label_candidates(batch, 1)
    ours = dict(zip(choices[0], scores[0].float().tolist()))
    theirs = full_sequence_scores(agent, obs, device).float().tolist()
    diff = max(abs(ours[c] - s) for c, s in zip(obs["label_candidates"], theirs))
    if diff > 1e-4:
        raise AssertionError(f"P2 {model}: scores differ by {diff:.2e}")

    def agent_eval(msg):
        def step():
            out = agent.batch_act([observed(agent, msg)])
            assert out[0].get("text_candidates")
        return step

    times = interleaved({
        "full-sequence scoring (convai_evaluation.py)": lambda: full_sequence_scores(
            agent, observed(agent, with_labels), device),
        "agent eval_step: ppl + hits@1": agent_eval(with_labels),
        "agent eval_step: hits@1 only": agent_eval(cands_only),
    }, reps, device)
    return {"context_tokens": length, "candidates": len(obs["label_candidates"]),
            "max_score_diff": diff, "times": times}
