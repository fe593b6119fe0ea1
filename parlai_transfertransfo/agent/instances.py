"""The recipe's instances built from ParlAI's observations and batches.

An observation's context becomes `<bos> persona <speaker> utterance ...` token lists
(`context_segments`, recipe/segments.py); a training batch becomes contexts and their
candidates, distractors first and the gold reply last (`recipe_batch`), the inputs of
`DoubleHeads.recipe_losses`.
"""
import torch
from parlai.utils.misc import warn_once

from parlai_transfertransfo.recipe import segments
from parlai_transfertransfo.recipe.prefix import left_pad


def instance_limit(agent, reply_len):
    """Most tokens an instance with a reply of `reply_len` may have: the model's
    positions, and ParlAI's --text-truncate (or --truncate) on the context when set."""
    limit = agent.max_positions
    if agent.text_truncate:  # the context: everything but the reply's <speaker> .. <eos>
        limit = min(limit, agent.text_truncate + reply_len + 2)
    return limit


def context_segments(agent, history, reply_budget):
    """Persona and recent history as token lists, truncated to fit the model."""
    utterances = segments.recent_history(history.utterance_vecs, agent.opt["max_history"])
    persona = list(history.persona_vecs)
    persona, utterances, _, notes = segments.truncate(
        persona, utterances, [0] * reply_budget, instance_limit(agent, reply_budget)
    )
    for note in notes:
        if not note.startswith("cut the reply"):  # a placeholder here, not the reply
            warn_once(note)
    return persona, utterances


def training_candidates(agent, batch, i, label):
    """Distractors of example i: its label candidates, else the other examples' replies."""
    n = agent.opt["num_candidates"] - 1
    cands = batch.candidates[i] if batch.candidates else None
    if not cands:  # no label_candidates: other examples' replies in the batch
        cands = [l[0] if isinstance(l, (list, tuple)) else l for l in (batch.labels or [])]
        cands = [c for c in cands if c != label]
    return segments.distractors(label, list(cands), n) if n > 0 else []


def recipe_batch(agent, batch, with_distractors):
    """The recipe's instances as contexts + candidates (see `DoubleHeads.recipe_losses`).

    Each example (N times with --personality-permutations N, persona rotated) gives one
    context and its candidates, distractors first and the gold reply last, as the
    recipe orders them. Returns the model's inputs and the [R, C] layout of the
    candidates (`cand_index`, -1 where an example has fewer distractors).
    """
    rotations = range(agent.opt.get("personality_permutations") or 1) if agent.is_training else [0]
    special, contexts, cands, owner, layout = agent.special, [], [], [], []
    for i, (persona, history) in enumerate(batch.segments):
        label = batch.labels[i]
        label = label[0] if isinstance(label, (list, tuple)) else label
        texts = training_candidates(agent, batch, i, label) if with_distractors else []
        replies = [agent._reply_vec(c) for c in texts] + [agent._reply_vec(label)]
        longest = max(len(r) for r in replies)
        for rotation in rotations:
            rotated = segments.rotate_persona(persona, rotation)
            p, h, kept, _ = segments.truncate(rotated, history, [0] * longest, instance_limit(agent, longest))
            ids, types, reply_type = segments.build_prefix(p, h, special)
            layout.append([len(cands) + j for j in range(len(replies))])
            for reply in replies:
                cands.append(([special.speaker1] + reply[: len(kept)] + [special.eos], reply_type))
                owner.append(len(contexts))
            contexts.append((ids, types))
    dev = batch.text_vec.device
    ids, mask = left_pad([c[0] for c in contexts], special.pad)
    types, _ = left_pad([c[1] for c in contexts], special.pad)
    lengths = torch.tensor([len(c) for c, _ in cands])
    cand_ids = torch.full((len(cands), int(lengths.max())), special.pad, dtype=torch.long)
    cand_types = torch.full_like(cand_ids, special.pad)
    for j, (c, reply_type) in enumerate(cands):
        cand_ids[j, : len(c)] = torch.tensor(c)
        cand_types[j, : len(c)] = reply_type
    n_cands = max(len(row) for row in layout)
    cand_index = torch.tensor([[-1] * (n_cands - len(row)) + row for row in layout])
    gold_rows = cand_index[:, -1]
    model_inputs = (ids, types, mask, torch.tensor(owner), cand_ids, cand_types, lengths, gold_rows)
    return tuple(t.to(dev) for t in model_inputs), cand_index.to(dev)
