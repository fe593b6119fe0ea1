"""The recipe's instances built from ParlAI's observations and batches.

An observation's context becomes `<bos> persona <speaker> utterance ...` token lists
(`context_segments`, recipe/segments.py); a training batch becomes contexts and their
candidates, distractors first and the gold reply last (`recipe_batch`), the inputs of
`DoubleHeads.recipe_losses`.
"""
import numpy as np
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


def reply_vecs(agent, obs, label_vecs, with_distractors=True):
    """The gold reply and its distractors (from the example's own label candidates) as
    token lists, distractors first; None when the distractors must come from the batch
    (the example has no label candidates)."""
    n = agent.opt["num_candidates"] - 1 if with_distractors else 0
    if not label_vecs:
        return None
    if n <= 0:
        return [label_vecs[0]]
    if not obs.get("label_candidates"):
        return None
    label = obs["labels"][0]
    return agent.dict.txt2vecs(segments.distractors(label, list(obs["label_candidates"]), n)) + [label_vecs[0]]


def example_instances(agent, persona, history, replies, rotations):
    """One example's contexts, one per persona rotation, each fitted to the model with
    room for its longest reply: [(ids, types, reply_type, reply_room)]."""
    longest = max(len(r) for r in replies)
    out = []
    for rotation in rotations:
        rotated = segments.rotate_persona(persona, rotation)
        p, h, kept, _ = segments.truncate(rotated, history, [0] * longest, instance_limit(agent, longest))
        ids, types, reply_type = segments.build_prefix(p, h, agent.special)
        out.append((ids, types, reply_type, len(kept)))
    return out


def observed_instances(agent, obs, persona, history, label_vecs):
    """Observe's share of a training example (in --num-workers' worker processes when
    set): its replies and contexts, so that the step only assembles tensors."""
    with_distractors = agent.opt["mc_coef"] > 0
    replies = reply_vecs(agent, obs, label_vecs, with_distractors)
    if replies is None:
        return None
    rotations = range(agent.opt.get("personality_permutations") or 1)
    return replies, example_instances(agent, persona, history, replies, rotations)


def recipe_batch(agent, batch, with_distractors):
    """The recipe's instances as contexts + candidates (see `DoubleHeads.recipe_losses`).

    Each example (N times with --personality-permutations N, persona rotated) gives one
    context and its candidates, distractors first and the gold reply last, as the
    recipe orders them. Returns the model's inputs and the [R, C] layout of the
    candidates (`cand_index`, -1 where an example has fewer distractors). Examples that
    observe already built (`observed_instances`) are only assembled here.
    """
    rotations = range(agent.opt.get("personality_permutations") or 1) if agent.is_training else [0]
    special, contexts, cands, owner, layout = agent.special, [], [], [], []
    observed = getattr(batch, "tt_instances", None) if agent.is_training and (
        with_distractors == (agent.opt["mc_coef"] > 0)) else None
    for i, (persona, history) in enumerate(batch.segments):
        built = observed[i] if observed else None
        if built is None:
            label = batch.labels[i]
            label = label[0] if isinstance(label, (list, tuple)) else label
            texts = training_candidates(agent, batch, i, label) if with_distractors else []
            replies = agent.dict.txt2vecs(texts + [label])
            built = replies, example_instances(agent, persona, history, replies, rotations)
        replies, instances = built
        for ids, types, reply_type, room in instances:
            layout.append([len(cands) + j for j in range(len(replies))])
            for reply in replies:
                cands.append(([special.speaker1] + reply[:room] + [special.eos], reply_type))
                owner.append(len(contexts))
            contexts.append((ids, types))
    dev = batch.text_vec.device
    ids, mask = left_pad([c[0] for c in contexts], special.pad)
    types, _ = left_pad([c[1] for c in contexts], special.pad)
    lengths = np.array([len(c) for c, _ in cands], dtype=np.int64)
    cand_ids = np.full((len(cands), int(lengths.max())), special.pad, dtype=np.int64)
    cand_types = np.full_like(cand_ids, special.pad)
    for j, (c, reply_type) in enumerate(cands):  # numpy rows: a torch tensor per row costs more
        cand_ids[j, : len(c)] = c
        cand_types[j, : len(c)] = reply_type
    lengths, cand_ids, cand_types = torch.from_numpy(lengths), torch.from_numpy(cand_ids), torch.from_numpy(cand_types)
    n_cands = max(len(row) for row in layout)
    cand_index = torch.tensor([[-1] * (n_cands - len(row)) + row for row in layout])
    gold_rows = cand_index[:, -1]
    model_inputs = (ids, types, mask, torch.tensor(owner), cand_ids, cand_types, lengths, gold_rows)
    return tuple(t.to(dev) for t in model_inputs), cand_index.to(dev)
