"""Many requests' cached contexts as one batch: `Prefix` rows padded on the left, joined,
and trimmed again when requests leave.

`DoubleHeads` already decodes left-padded rows exactly as it decodes each row alone
(positions come from each row's mask, padding is masked out of attention), so requests of
any lengths can share one model call per step once their caches have the same width.
"""
from dataclasses import replace

import torch
import torch.nn.functional as F

from parlai_transfertransfo.recipe.prefix import Prefix


def pad_left(prefix: Prefix, width: int) -> Prefix:
    """`prefix` with masked-out columns added on the left, up to `width` columns."""
    extra = width - prefix.mask.size(1)
    if extra <= 0:
        return prefix

    def pad_seq(t):  # [B, S] tensors
        return None if t is None else F.pad(t, (extra, 0))

    kv = None
    if prefix.kv is not None:  # [B, heads, S, head_dim]: pad dim -2
        kv = tuple((F.pad(k, (0, 0, extra, 0)), F.pad(v, (0, 0, extra, 0))) for k, v in prefix.kv)
    return replace(prefix, kv=kv, ids=pad_seq(prefix.ids), types=pad_seq(prefix.types), mask=pad_seq(prefix.mask))


def concat(prefixes) -> Prefix:
    """One Prefix holding the rows of every prefix, in order (left-padded to one width)."""
    prefixes = [p for p in prefixes if p is not None and len(p)]
    if len(prefixes) == 1:
        return prefixes[0]
    width = max(p.mask.size(1) for p in prefixes)
    prefixes = [pad_left(p, width) for p in prefixes]

    def cat(get):
        parts = [get(p) for p in prefixes]
        return None if parts[0] is None else torch.cat(parts, 0)

    kv = None
    if prefixes[0].kv is not None:
        kv = tuple(
            (torch.cat([p.kv[i][0] for p in prefixes], 0), torch.cat([p.kv[i][1] for p in prefixes], 0))
            for i in range(len(prefixes[0].kv))
        )
    return Prefix(
        kv=kv, ids=cat(lambda p: p.ids), types=cat(lambda p: p.types), mask=cat(lambda p: p.mask),
        next_position=cat(lambda p: p.next_position), last_logits=cat(lambda p: p.last_logits),
    )


def trim_left(prefix: Prefix) -> Prefix:
    """Drop the leading columns that are padding in every row (left by requests that
    finished): views, no copy; the next decoding step attends over fewer columns."""
    used = prefix.mask.any(0)
    if not bool(used.any()) or bool(used[0]):
        return prefix
    first = int(used.nonzero()[0])

    def cut(t):
        return None if t is None else t[:, first:]

    kv = None
    if prefix.kv is not None:
        kv = tuple((k[:, :, first:], v[:, :, first:]) for k, v in prefix.kv)
    return replace(prefix, kv=kv, ids=cut(prefix.ids), types=cut(prefix.types), mask=cut(prefix.mask))
