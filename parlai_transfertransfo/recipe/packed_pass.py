"""Contexts and their candidates through a DoubleHeads backbone in packed rows (packing.py):
one forward pass per band of similar example lengths.

`DoubleHeads.recipe_losses` (training and ranking) runs it. In inference it can also:
- continue each context's cached start (its persona, persona_cache.py): the start's
  keys/values go before the row's own (kv_cache.PackedPass), and only the rest runs;
- keep each context's keys/values, with the reply's `<speaker1>` after them, for the
  generator to continue instead of running the context again.
"""
import torch

from parlai_transfertransfo.recipe import kv_cache, packing


def candidate_states(heads, ids, types, mask, owner, cand_ids, cand_types, cand_lengths, past=None, keep=False):
    """(states [X, H], index [N, L], kept) for LEFT-padded contexts [P, S] and right-padded
    candidates [N, L] (see `DoubleHeads.recipe_losses`): index[i, t] is the row of `states`
    for token t of candidate i (-1: padding).

    past: a Prefix of each context's cached start (right-aligned), which the contexts
    continue. kept (keep=True, and every context owns a non-empty candidate; else None):
    (per layer (keys, values) [P, h, M + S + 1, d] of `<start> <context> <speaker1>` in the
    contexts' order, laid out as past.mask + mask + one column; the `<speaker1>` rows of
    `states` [P]).

    A row is as wide as the longest example of its pass, and ConvAI2's examples (context +
    20 candidates) are mostly one to a row. On a CPU, passes hold at most
    packing.CPU_PASS_TOKENS tokens.
    """
    keep = keep and packing.first_candidates(owner, ids.size(0)) is not None and bool(cand_lengths.gt(0).all())
    cpu = ids.device.type == "cpu"
    groups = packing.length_groups(mask, owner, cand_lengths, max_tokens=packing.CPU_PASS_TOKENS if cpu else None)
    if len(groups) == 1 and len(groups[0][0]) == ids.size(0):  # one pass over the batch as it is
        groups = [(None, None)]
    dtype = heads.lm.get_input_embeddings().weight.dtype
    states, index, offset, kept = [], torch.full_like(cand_ids, -1), 0, []
    for contexts, cands in groups:
        part = (ids, types, mask, owner, cand_ids, cand_types, cand_lengths)
        past_mask = None if past is None else past.mask
        if contexts is not None:
            part = packing.select(part, contexts, cands)
            past_mask = None if past is None else past_mask.index_select(0, contexts)
        rows = packing.pack(*part, past_mask=past_mask)
        heads._check_positions(rows.positions)
        row_past = None
        if past is not None:  # each row's context's start, copied once
            which = rows.row_context if contexts is None else contexts.index_select(0, rows.row_context)
            row_past = [(k.index_select(0, which), v.index_select(0, which)) for k, v in past.kv]
        keep_index = start = cache = None
        if keep:
            start = rows.cand_index[packing.first_candidates(part[3], part[0].size(0)), 0]
            keep_index = _key_columns(rows, past_mask, torch.cat([rows.ctx_index.clamp(min=0), start[:, None]], 1))
        if keep or row_past is not None:
            cache = kv_cache.PackedPass(heads.config.num_hidden_layers, row_past, keep_index)
        hidden = heads._hidden(rows.ids, rows.types, rows.mask(dtype), rows.positions, cache and cache.cache)
        states.append(hidden.reshape(-1, hidden.size(-1)))
        at = rows.cand_index.masked_fill(rows.cand_index.lt(0), -1 - offset) + offset
        if cands is None:
            index = at
        else:
            index[cands] = at
        if keep:
            kept.append((contexts, cache.kept(), start + offset))
        offset += states[-1].size(0)
    states = torch.cat(states) if len(states) > 1 else states[0]
    return states, index, _in_context_order(kept) if keep else None


def _key_columns(rows, past_mask, index):
    """Flat columns index [P, S] of a pass's rows [R * W] as (row, column) [P, M + S] of its
    keys [R, M + W], each context's M cached-start columns (past_mask, right-aligned) first."""
    width = rows.ids.size(1)
    row, column = index // width, index % width
    if past_mask is None:
        return row, column
    m = past_mask.size(1)
    row_of = torch.zeros(index.size(0), dtype=torch.long, device=index.device)
    row_of[rows.row_context] = torch.arange(rows.row_context.numel(), device=index.device)
    start = torch.arange(m, device=index.device)[None, :].expand(index.size(0), m)
    return torch.cat([row_of[:, None].expand_as(start), row], 1), torch.cat([start, column + m], 1)


def _in_context_order(kept):
    """The passes' kept keys/values and start rows, joined, in the contexts' order."""
    kv = [layers for _, layers, _ in kept]
    kv = tuple((torch.cat([p[i][0] for p in kv]), torch.cat([p[i][1] for p in kv])) for i in range(len(kv[0])))
    start = torch.cat([s for _, _, s in kept])
    if kept[0][0] is not None:  # passes by length band: back to the contexts' order
        order = torch.argsort(torch.cat([contexts for contexts, _, _ in kept]))
        kv = tuple((k.index_select(0, order), v.index_select(0, order)) for k, v in kv)
        start = start.index_select(0, order)
    return kv, start
