"""Contexts already run through the model (`Prefix`), and the left padding they expect.

A Prefix is what ranking, decoding, the persona cache and the server's batches continue:
keys/values, mask and next positions, never written in place.
"""
from dataclasses import dataclass

import numpy as np
import torch


def left_pad(rows, pad):
    """(padded [B, W], mask [B, W]) of id lists, right-aligned: the LEFT padding every
    cached prefix here expects (padding is `pad`, masked out). Filled in numpy: one torch
    tensor per row cost more than the rest of a training batch's host work."""
    width = max(len(r) for r in rows)
    padded = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if len(r):
            padded[i, width - len(r):] = r
            mask[i, width - len(r):] = 1
    return torch.from_numpy(padded), torch.from_numpy(mask)


@dataclass(frozen=True)
class Prefix:
    """Contexts already run through the model, ready to be continued.

    Every field is a tensor that is only ever replaced, never written in place, so one
    Prefix can be scored, selected and decoded from any number of times.
    """

    kv: tuple | None  # per layer (keys, values), each [B, heads, S, head_dim]; None for OpenAI GPT
    ids: torch.Tensor | None  # [B, S] every token so far (OpenAI GPT only: it is re-run)
    types: torch.Tensor | None  # [B, S] their token types (OpenAI GPT only)
    mask: torch.Tensor  # [B, S] 1 on real tokens, 0 on padding (left or in the middle)
    next_position: torch.Tensor  # [B] position id the next real token of each row gets
    last_logits: torch.Tensor  # [B, V] next-token logits after each row's last real token

    def __len__(self):
        return self.mask.size(0)
