"""Ranking label candidates (hits@1): every example's candidates continue its context, all
in one packed pass (DoubleHeads.recipe_losses with no gold rows, or the gold rows only when
evaluation's ppl comes from the same pass), scored by the MC head or by mean LM loss."""
import torch
from parlai.utils.misc import warn_once


def candidate_inputs(agent, batch):
    """Every example's label candidates as continuations of its context (text_vec):
    recipe_losses' inputs with lm_rows left out, or None without candidates."""
    owners, cand_vecs = [], []
    special = agent.special
    prefix_lengths = batch.text_mask.sum(-1).tolist()
    for i, cands in enumerate(batch.candidates or []):
        vecs = batch.tt_cand_vecs[i] or agent.dict.txt2vecs(list(cands or []))
        room = agent.max_positions - prefix_lengths[i] - 2  # <speaker1> ... <eos>
        for vec in vecs:
            if len(vec) > room:
                warn_once(f"label candidates cut to {room} tokens to fit the model")
            owners.append(i)
            cand_vecs.append([special.speaker1] + vec[:room] + [special.eos])
    if not cand_vecs:
        return None
    dev = batch.text_vec.device
    lengths = torch.tensor([len(v) for v in cand_vecs], device=dev)
    cand_ids = torch.full((len(cand_vecs), int(lengths.max())), special.pad, dtype=torch.long, device=dev)
    for j, v in enumerate(cand_vecs):
        cand_ids[j, : len(v)] = torch.tensor(v, device=dev)
    owner = torch.tensor(owners, device=dev)
    cand_types = batch.reply_type.to(dev).index_select(0, owner).unsqueeze(1).expand_as(cand_ids)
    return batch.text_vec, batch.text_types, batch.text_mask, owner, cand_ids, cand_types, lengths


def gold_candidates(agent, batch):
    """Index (in the flat candidate list) of each example's gold label, or None if some
    example's label is not among its candidates."""
    if agent.is_training or not batch.candidates or not agent.rank_candidates or batch.labels is None:
        return None
    gold, start = [], 0
    for label, cands in zip(batch.labels, batch.candidates):
        label = label[0] if isinstance(label, (list, tuple)) else label
        if not cands or label not in cands:
            return None
        gold.append(start + cands.index(label))
        start += len(cands)
    return gold


def score_candidates(agent, model_inputs, gold, keep_contexts=False):
    """One pass over the contexts and all their candidates: (token_nll, argmax) of the
    gold replies' tokens, plus the ranking scores of every candidate. keep_contexts: the
    generator will continue these contexts (TransfertransfoModel.forward)."""
    lengths, n = model_inputs[6], model_inputs[3].size(0)
    by_lm = agent.opt.get("rank_by", "mc") == "lm"
    lm_rows = torch.arange(n, device=lengths.device) if by_lm else torch.tensor(gold, device=lengths.device)
    token_nll, argmax, mc_logits = agent.model(*model_inputs, lm_rows, keep_contexts=keep_contexts)
    if by_lm:
        scores = -(token_nll.sum(-1) / (lengths - 1).clamp(min=1))
        pick = torch.tensor(gold, device=lengths.device)
        return token_nll.index_select(0, pick), argmax.index_select(0, pick), scores
    return token_nll, argmax, mc_logits


def rank(agent, batch):
    """(cand_choices, cand_scores) of each example, best first; (None, None) without
    candidates. Scores that compute_loss already computed (batch.tt_candidate_scores) are
    reused: one pass gives ppl and hits@1."""
    if not batch.candidates:
        return None, None
    scores = getattr(batch, "tt_candidate_scores", None)
    if scores is None:
        model_inputs = candidate_inputs(agent, batch)
        if model_inputs is None:
            return None, None
        n = model_inputs[3].size(0)
        with torch.no_grad():
            if agent.opt.get("rank_by", "mc") == "lm":
                _, _, scores = score_candidates(agent, model_inputs, list(range(n)))
            else:  # no LM head needed at all: no gold rows
                _, _, scores = agent.model(*model_inputs, model_inputs[3][:0])
    cand_choices, cand_scores, start = [], [], 0
    for cands in batch.candidates:
        n = len(cands or [])
        s = scores[start : start + n]
        start += n
        order = s.argsort(descending=True).tolist()
        cand_choices.append([cands[o] for o in order])
        cand_scores.append(s[order])
    return cand_choices, cand_scores
