"""Contexts and their candidates packed into rows for a forward pass, no padding inside.

The recipe scores every candidate as a whole sequence, context + candidate. Here each
context runs once and its candidates follow it in the same row, back to back:

    row:   [ context A | <speaker1> | cand A1 | cand A2 | ... | context B | ... | pad ]

A block-diagonal attention mask gives every token exactly the view it has in the recipe's
own sequence: a context token sees its context up to itself; a candidate token sees its
whole context and its own candidate up to itself, never another candidate or another
example. Positions restart after the context for each candidate. So every token gets the
recipe's hidden state, while the context costs its own length once, candidates cost their
own length (no padding to the longest one), and short examples share a row with others
instead of being padded to the longest. Rows are filled first-fit, longest example first,
up to the longest example's length, so padding is only what is left at the end of a row.
The reply's speaker token, the same first token of every candidate, runs once per context.

`length_groups` splits a batch into passes by length band; `pack(past_mask=...)` lets each
example continue a cached start (one example to a row). packed_pass.py runs the passes.

Nothing here depends on the backbone: the rows go through the model's ordinary forward
with `position_ids` and a 4D additive attention mask (any module that accepts those).
"""
from dataclasses import dataclass, replace

import torch


# A pass pads each row to its longest example: examples go into one pass per band of
# similar lengths, a band taking the next (shorter) example while padding them all to its
# longest adds at most this fraction of their tokens; at most MAX_PASSES bands. On a CPU a
# pass also holds at most CPU_PASS_TOKENS (padded) tokens: 16 ConvAI2 examples (~6000 tokens)
# rank 17% (1 thread) to 25% (2 threads) slower per example in one pass than two at a time,
# their activations no longer in the caches.
PADDING_SLACK = 0.1
MAX_PASSES = 4
CPU_PASS_TOKENS = 1024


@dataclass(frozen=True)
class PackedRows:
    """Rows ready for one forward pass, and where each candidate token landed in them."""

    ids: torch.Tensor  # [R, W] token ids (0 at padding)
    types: torch.Tensor | None  # [R, W] token types, or None
    positions: torch.Tensor  # [R, W] position ids (0 at padding)
    allowed: torch.Tensor  # [R, W, M + W] bool: query (dim 1) may attend to key (dim 2)
    cand_index: torch.Tensor  # [N, L] flat index into [R * W] of candidate tokens (-1: padding)
    ctx_index: torch.Tensor  # [P, S] the same for the contexts, in their left-padded layout
    tokens: int  # real tokens in the rows (contexts once + candidates)
    # with a cached start (pack's past_mask [P, M]): the context of each row [R], one to a
    # row, whose start's M columns come before the row's own keys; else None (M = 0)
    row_context: torch.Tensor | None = None

    def mask(self, dtype):
        """[R, 1, W, M + W] additive mask in `dtype` (see `additive_mask`)."""
        return additive_mask(self.allowed, dtype)


def additive_mask(allowed, dtype):
    """[R, 1, Q, K] additive attention mask for allowed [R, Q, K] (bool): 0 where allowed, the
    dtype's minimum elsewhere, as the backbones take a 4D mask."""
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def first_fit_rows(lengths, capacity):
    """Rows for items of `lengths`: (row of each item, column where it starts), first-fit
    decreasing; an item longer than `capacity` gets a row of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    used, row, start = [], [0] * len(lengths), [0] * len(lengths)
    for i in order:
        r = next((r for r, u in enumerate(used) if u + lengths[i] <= capacity), len(used))
        if r == len(used):
            used.append(0)
        row[i], start[i] = r, used[r]
        used[r] += lengths[i]
    return row, start, max(used, default=0)


def pack(ctx_ids, ctx_types, ctx_mask, owner, cand_ids, cand_types, cand_lengths, past_mask=None):
    """Pack LEFT-padded contexts [P, S] (mask 1 on real tokens) and right-padded candidates
    [N, L] (cand_lengths [N] real tokens, owner [N] their context) into PackedRows.

    Contexts that own no candidate are left out: they would cost tokens and give nothing.
    Where all of a context's candidates start with the same token and type (the recipe's
    reply speaker token, `<speaker1>`), that token has the same view and position in each,
    so it runs once, right after the context, and every candidate's first index points there.

    past_mask [P, M] (right-aligned, 1 on real columns): each context continues a cached
    start of that many tokens (its persona, persona_cache.py), whose keys/values the pass
    puts before its row: positions follow the start, and every token of the example sees it.
    """
    used = torch.zeros(ctx_ids.size(0), dtype=torch.long, device=owner.device).index_add_(0, owner, cand_lengths) > 0
    first = _shared_start(owner, cand_ids, cand_types, cand_lengths, ctx_ids.size(0))
    if first is None:
        return _pack(ctx_ids, ctx_types, ctx_mask, used, owner, cand_ids, cand_types, cand_lengths, past_mask)
    rows = _pack(
        torch.cat([ctx_ids, cand_ids.index_select(0, first)[:, :1]], 1),
        None if ctx_types is None else torch.cat([ctx_types, cand_types.index_select(0, first)[:, :1]], 1),
        torch.cat([ctx_mask.long(), used.long()[:, None]], 1), used, owner,
        cand_ids[:, 1:], None if cand_types is None else cand_types[:, 1:], cand_lengths - 1, past_mask,
    )
    cand_index = torch.cat([rows.ctx_index.index_select(0, owner)[:, -1:], rows.cand_index], 1)
    return replace(rows, cand_index=cand_index, ctx_index=rows.ctx_index[:, :-1])


def first_candidates(owner, contexts):
    """Each context's first candidate [P] (owner [N]: each candidate's context), or None
    when some context has none."""
    first = _first_of(owner, contexts)
    return None if bool(first.eq(owner.numel()).any()) else first


def _first_of(owner, contexts):
    """Each context's first candidate [P]; N (none) for a context without one."""
    n = owner.numel()
    first = torch.full((contexts,), n, dtype=torch.long, device=owner.device)
    return first.scatter_reduce(0, owner, torch.arange(n, device=owner.device), "amin")


def _shared_start(owner, cand_ids, cand_types, cand_lengths, n_ctx):
    """Each context's first candidate [P] (any index for a context without one) when every
    candidate has a first token, the same (with its type) as its context's other ones; else None."""
    n = owner.numel()
    if n == 0 or cand_ids.size(1) == 0 or bool(cand_lengths.lt(1).any()):
        return None
    first = _first_of(owner, n_ctx).clamp(max=n - 1)
    same = cand_ids[:, 0].eq(cand_ids[first[owner], 0])
    if cand_types is not None:
        same &= cand_types[:, 0].eq(cand_types[first[owner], 0])
    return first if bool(same.all()) else None


def _pack(ctx_ids, ctx_types, ctx_mask, used, owner, cand_ids, cand_types, cand_lengths, past_mask):
    """`pack` of the contexts `used` [P] (bool), each followed by its candidates."""
    dev = cand_ids.device
    n_ctx, n_cands, max_len = ctx_ids.size(0), cand_ids.size(0), cand_ids.size(1)
    ctx_len = ctx_mask.long().sum(1)
    cand_total = torch.zeros(n_ctx, dtype=torch.long, device=dev).index_add_(0, owner, cand_lengths)
    ctx_len_l, cand_total_l, used_l = ctx_len.tolist(), cand_total.tolist(), used.tolist()
    used_list = [p for p in range(n_ctx) if used_l[p]]
    lengths = [ctx_len_l[p] + cand_total_l[p] for p in used_list]
    if past_mask is None:
        rows, starts, width = first_fit_rows(lengths, max(lengths, default=0))
    else:  # one example to a row: a row's keys start with its example's cached start
        rows, starts, width = list(range(len(lengths))), [0] * len(lengths), max(lengths, default=0)
    past_len = torch.zeros(n_ctx, dtype=torch.long, device=dev) if past_mask is None else past_mask.long().sum(1)
    n_rows = max(rows, default=-1) + 1
    ex_row = torch.zeros(n_ctx, dtype=torch.long, device=dev)
    ex_start = torch.zeros(n_ctx, dtype=torch.long, device=dev)
    if used_list:
        idx = torch.tensor(used_list, device=dev)
        ex_row[idx] = torch.tensor(rows, device=dev)
        ex_start[idx] = torch.tensor(starts, device=dev)

    # per column: token id, type, position, example (-1 padding), candidate (-1 context)
    ids = torch.zeros((n_rows, width), dtype=torch.long, device=dev)
    types = None if ctx_types is None else torch.zeros_like(ids)
    positions = torch.zeros_like(ids)
    example = torch.full_like(ids, -1)
    cand_of = torch.full_like(ids, -2)  # padding columns: a candidate id nobody has

    # contexts: real tokens of used contexts, left-aligned at their example's start
    in_ctx = ctx_mask.bool() & used[:, None]
    ctx_pos = (ctx_mask.long().cumsum(1) - 1).clamp(min=0)
    ctx_p = torch.arange(n_ctx, device=dev)[:, None].expand_as(ctx_ids)[in_ctx]
    r, c = ex_row[ctx_p], ex_start[ctx_p] + ctx_pos[in_ctx]
    ids[r, c], example[r, c], cand_of[r, c] = ctx_ids[in_ctx], ctx_p, -1
    positions[r, c] = ctx_pos[in_ctx] + past_len[ctx_p]
    if types is not None:
        types[r, c] = ctx_types[in_ctx]
    ctx_index = torch.full(ctx_ids.shape, -1, dtype=torch.long, device=dev)
    ctx_index[in_ctx] = r * width + c

    # candidates: after their context, in their order, back to back
    steps = torch.arange(max_len, device=dev)
    real = steps[None, :] < cand_lengths[:, None]
    before = torch.zeros_like(cand_lengths)  # tokens of the same context's earlier candidates
    if n_cands:
        order = torch.argsort(owner, stable=True)
        sorted_len = cand_lengths[order]
        cum = torch.cumsum(sorted_len, 0) - sorted_len
        first = torch.cumsum(cand_total, 0) - cand_total  # cum of the owner's first candidate
        before[order] = cum - first[owner[order]]
    cand_start = ex_start[owner] + ctx_len[owner] + before  # [N] column of each first token
    cand_n = torch.arange(n_cands, device=dev)[:, None].expand_as(cand_ids)
    r = ex_row[owner][:, None].expand_as(cand_ids)[real]
    c = (cand_start[:, None] + steps[None, :])[real]
    ids[r, c] = cand_ids[real]
    positions[r, c] = ((past_len + ctx_len)[owner][:, None] + steps[None, :])[real]
    example[r, c], cand_of[r, c] = owner[:, None].expand_as(cand_ids)[real], cand_n[real]
    if types is not None:
        types[r, c] = cand_types[real]
    cand_index = torch.full((n_cands, max_len), -1, dtype=torch.long, device=dev)
    cand_index[real] = r * width + c

    # who sees whom: same example, not later, and (a context key, or the same candidate);
    # padding sees padding (never an empty softmax row), real tokens never see padding
    cols = torch.arange(width, device=dev)
    allowed = (example[:, :, None] == example[:, None, :]) & (cols[None, None, :] <= cols[None, :, None])
    allowed &= (cand_of[:, None, :] == -1) | (cand_of[:, None, :] == cand_of[:, :, None])
    tokens = int(ctx_len[used].sum()) + int(cand_lengths.sum())
    if past_mask is None:
        return PackedRows(ids, types, positions, allowed, cand_index, ctx_index, tokens)
    row_context = torch.tensor(used_list, dtype=torch.long, device=dev)
    sees_past = past_mask.bool().index_select(0, row_context)[:, None, :] & example.ge(0)[:, :, None]
    return PackedRows(ids, types, positions, torch.cat([sees_past, allowed], 2), cand_index, ctx_index, tokens,
                      row_context)


def length_groups(ctx_mask, owner, cand_lengths, slack=PADDING_SLACK, max_groups=MAX_PASSES, max_tokens=None):
    """Examples in bands of similar lengths (a context + its candidates), longest first:
    [(context indices [P_g], their candidates' indices [N_g])]. Contexts without a
    candidate are left out, as `pack` leaves them out. With `max_tokens`, a band also
    closes before its padded tokens pass it (an example longer has a band of its own),
    and `max_groups` does not apply."""
    dev = owner.device
    cand_total = torch.zeros(ctx_mask.size(0), dtype=torch.long, device=dev).index_add_(0, owner, cand_lengths)
    lengths = (ctx_mask.long().sum(1) + cand_total).tolist()
    order = sorted((i for i, n in enumerate(cand_total.tolist()) if n > 0), key=lambda i: -lengths[i])
    groups, real = [], 0
    for i in order:
        padded = (len(groups[-1]) + 1) * lengths[groups[-1][0]] if groups else 0
        fits = groups and padded <= (1 + slack) * (real + lengths[i])
        if max_tokens is not None:
            fits = fits and padded <= max_tokens
        elif len(groups) == max_groups:
            fits = True
        if fits:
            groups[-1].append(i)
            real += lengths[i]
        else:
            groups.append([i])
            real = lengths[i]
    out = []
    for group in groups:
        contexts = torch.tensor(sorted(group), dtype=torch.long, device=dev)
        out.append((contexts, torch.isin(owner, contexts).nonzero().squeeze(1)))
    return out


def select(inputs, contexts, cands):
    """`pack`'s inputs (ids, types, mask, owner, cand_ids, cand_types, cand_lengths) cut
    to these contexts and candidates, owners renumbered."""
    ids, types, mask, owner, cand_ids, cand_types, cand_lengths = inputs
    renumber = torch.full((ids.size(0),), -1, dtype=torch.long, device=owner.device)
    renumber[contexts] = torch.arange(contexts.numel(), device=owner.device)

    def rows(t, which):
        return None if t is None else t.index_select(0, which)

    return (rows(ids, contexts), rows(types, contexts), rows(mask, contexts), renumber[owner.index_select(0, cands)],
            rows(cand_ids, cands), rows(cand_types, cands), rows(cand_lengths, cands))
