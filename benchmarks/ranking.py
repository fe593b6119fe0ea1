"""P2 hits@1 scoring of 20 label candidates, through `eval_model`'s code path (`batch_act` ->
`eval_step`, `--skip-generation true`), against the original ConvAI2 evaluation.

Baseline (`convai_evaluation.py`, `TransformerAgent.act` with eval_type hits@1): every
candidate becomes a full persona + history + candidate sequence, the 20 are padded into one
[1, 20, T] batch and run through the double-heads model; the MC logits rank them.
The agent runs the context once and scores the candidates as continuations of its cache.
Two agent sides: with `eval_labels` (what eval_model does: gold LM loss for ppl + ranking)
and with candidates only (ranking alone).
"""
import torch

from benchmarks.common import batchify, context_near, double_heads, interleaved, make_agent, message, observed
from parlai_transfertransfo import inputs


def full_sequence_scores(agent, obs, device):
    """MC logit of every candidate, each run as a whole sequence (the original algorithm)."""
    heads, special = double_heads(agent), agent.special
    persona, history = obs["tt_persona"], obs["tt_history"]
    instances = [inputs.build_instance(persona, history, agent._reply_vec(c), special)
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
