"""The previous ranking path: candidates continuing a cached context (`Prefix`).

Kept selectable (`DoubleHeads.candidate_path = "cached"`) for side-by-side benchmarks, and
the path OpenAI GPT (no 4D masks, no cache) and sliding-window models always take: the
contexts run first, then each context's candidates in one row over its cache.
"""
import torch
import torch.nn.functional as F

from parlai_transfertransfo.recipe import packing
from parlai_transfertransfo.recipe.prefix import Prefix


def score_candidates(heads, prefix: Prefix, owner, cand_ids, cand_types, cand_lengths, nll=True):
    """Score N candidates as continuations of their contexts: (mc_logits [N], token_nll [N, L]).

    owner [N] is the prefix row of each candidate; cand_ids/cand_types [N, L] are
    right-padded and start with the reply's speaker token; cand_lengths [N] count real
    tokens. mc_logits reads the hidden state at each candidate's last real token
    (`<eos>`). token_nll[i, t] = -log p(cand_ids[i, t+1] | context, cand_ids[i, :t+1])
    for t + 1 < cand_lengths[i], else 0: the first (speaker) token is given, never
    scored, and the last column is always 0 — the same tokens the training LM loss
    labels (reply and `<eos>`), so token_nll.sum(1) is that loss summed per candidate.
    With nll=False the LM head is skipped (most of the cost) and token_nll is None.

    """
    hidden, mask = continue_candidates(heads, prefix, owner, cand_ids, cand_types, cand_lengths)
    mc_logits = heads._mc_logits(hidden, (cand_lengths - 1).clamp(min=0))
    if not nll:
        return mc_logits, None
    lm_logits = heads._lm_logits(hidden[:, :-1])
    token_nll = F.cross_entropy(lm_logits.transpose(1, 2), cand_ids[:, 1:], reduction="none")
    return mc_logits, F.pad(token_nll * mask[:, 1:], (0, 1))


def continue_candidates(heads, prefix: Prefix, owner, cand_ids, cand_types, cand_lengths):
    """Hidden states [N, L, H] of right-padded candidates [N, L] continuing their
    context owner[N], and their mask [N, L].

    Packed: each context's candidates run back to back in ONE row after its cache, no
    padding between them, with an attention mask that lets a candidate see its context
    and its own earlier tokens only, and positions that restart after the context for
    each candidate. The same attention and positions as one row per candidate, without
    copying the context's cache per candidate or running their padding. OpenAI GPT (no
    cache) and sliding-window models (the custom mask would lift the window) take one
    row per candidate instead.
    """
    steps = torch.arange(cand_ids.size(1), device=cand_ids.device)
    cand_mask = (steps[None, :] < cand_lengths[:, None]).long()
    if heads.kind == "openai-gpt" or getattr(heads.config, "sliding_window", None):
        hidden, _ = heads._advance(heads.select(prefix, owner), cand_ids, cand_types, cand_mask)
        return hidden, cand_mask
    dev, rows = cand_ids.device, len(prefix)
    # where each real candidate token goes: packed row owner[i], column start[i] + t
    order = torch.argsort(owner, stable=True)
    lengths = cand_lengths.index_select(0, order)
    ends = torch.zeros(rows, dtype=torch.long, device=dev).index_add_(0, owner, cand_lengths)
    row_start = torch.cumsum(ends, 0) - ends
    before = torch.cumsum(lengths, 0) - lengths  # tokens of earlier candidates (sorted)
    start = torch.empty_like(before)
    start[order] = before - row_start.index_select(0, owner.index_select(0, order))
    real = cand_mask.bool()
    cand_rows = owner[:, None].expand_as(cand_ids)[real]
    cols = (start[:, None] + steps[None, :])[real]
    width = int(ends.max()) if rows else 0
    packed_ids = torch.zeros((rows, width), dtype=torch.long, device=dev)
    packed_ids[cand_rows, cols] = cand_ids[real]
    packed_types = None
    if cand_types is not None:
        packed_types = torch.zeros_like(packed_ids)
        packed_types[cand_rows, cols] = cand_types[real]
    which = torch.full((rows, width), -1, dtype=torch.long, device=dev)  # candidate per column
    which[cand_rows, cols] = torch.arange(len(owner), device=dev)[:, None].expand_as(cand_ids)[real]
    offset = torch.zeros((rows, width), dtype=torch.long, device=dev)
    offset[cand_rows, cols] = steps[None, :].expand_as(cand_ids)[real]
    positions = prefix.next_position[:, None] + offset
    # queries [rows, W] see: the context's real tokens, and their own candidate up to them
    same = (which[:, :, None] == which[:, None, :]) & (offset[:, None, :] <= offset[:, :, None])
    same &= which[:, None, :].ge(0)
    see = torch.cat([prefix.mask.bool()[:, None, :].expand(rows, width, -1), same], dim=2)
    mask4d = packing.additive_mask(see, heads.lm.get_input_embeddings().weight.dtype)
    hidden = heads._hidden(packed_ids, packed_types, mask4d, positions, heads._cache(prefix))
    out = hidden.new_zeros(cand_ids.size(0), cand_ids.size(1), hidden.size(-1))
    out[real] = hidden[cand_rows, cols]
    return out, cand_mask
