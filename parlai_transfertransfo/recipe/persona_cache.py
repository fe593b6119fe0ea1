"""Keys/values of each context's `<bos> + persona` start, kept from one turn to the next.

The recipe's context starts with `<bos>` and the persona, which never changes within a
chat, while the history after it slides. A causal model's keys/values at a token depend
only on that token and those before it (ids, token types, positions 0, 1, ...), so the
persona's keys/values are the same at every turn: they are computed once, kept here, and
each later context runs only its history (and the reply's `<speaker1>`) over them, with
the same attention, positions and segments as the whole context: the same replies
(tests/test_persona_cache.py).

Bounded: the least recently used entries go past `max_bytes`. Entries belong to one set of
weights: any change to a parameter (an optimizer step, `load_state_dict` on the model or
on any submodule, `.to()`) changes the weights' fingerprint, which empties the cache.
"""
import collections
import threading

import torch
import torch.nn.functional as F

from parlai_transfertransfo.recipe.prefix import left_pad, Prefix

DEFAULT_MAX_MIB = 128


class PersonaCache:
    """Least-recently-used persona starts: (ids, types, dtype, device) -> per-layer (k, v) [1, h, P, d]."""

    def __init__(self, max_bytes=DEFAULT_MAX_MIB << 20):
        self.max_bytes = max_bytes
        self.entries = collections.OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0
        self.weights = None  # fingerprint of the weights the entries were computed with
        self.lock = threading.Lock()

    def __len__(self):
        return len(self.entries)

    def clear(self):
        with self.lock:
            self.entries.clear()
            self.bytes = 0

    def encode(self, heads, ids, types, mask, persona_length) -> Prefix:
        """`heads.encode_prefix(ids, types, mask)` for LEFT-padded ids/types/mask [B, S],
        with each row's first `persona_length(real ids)` tokens read from the cache (or run
        and added to it). Every row keeps at least one token to run: its last logits."""
        persona, rest = self.split(heads, ids, types, mask, persona_length)
        return heads.encode_prefix(*rest, past=persona)

    def split(self, heads, ids, types, mask, persona_length):
        """(persona Prefix, (ids, types, mask) of the rest): each row's cached start, right-
        aligned (None where no row has one), and its other tokens, left-padded; the ranking
        pass continues the first with the second as `encode` does."""
        self._check_weights(heads)
        rows = [_real(ids[i], types[i], mask[i]) for i in range(ids.size(0))]
        dtype = heads.lm.get_input_embeddings().weight.dtype
        if torch.is_autocast_enabled(ids.device.type):  # --bf16: keys/values come out in bf16
            dtype = torch.get_autocast_dtype(ids.device.type)
        keys = []
        for r_ids, r_types in rows:
            p = min(persona_length(r_ids), len(r_ids) - 1)
            keys.append((tuple(r_ids[:p]), tuple(r_types[:p]), dtype, ids.device) if p > 0 else None)
        kvs = self._lookup_or_run(heads, keys, ids.device)
        lengths = [len(k[0]) if k else 0 for k in keys]
        rest = _left_pad([(r_ids[p:], r_types[p:]) for (r_ids, r_types), p in zip(rows, lengths)], ids.device)
        if not any(lengths):
            return None, rest
        return _right_aligned([kvs[k] if k else None for k in keys], lengths, ids.device), rest

    def _check_weights(self, heads):
        """Empty the cache when any parameter was replaced, moved or changed in place."""
        weights = tuple((p.data_ptr(), p._version) for p in heads.parameters())
        with self.lock:
            if weights != self.weights:
                self.entries.clear()
                self.bytes = 0
                self.weights = weights

    def _lookup_or_run(self, heads, keys, device):
        found, missing = {}, []
        with self.lock:
            for key in dict.fromkeys(k for k in keys if k):
                if key in self.entries:
                    self.entries.move_to_end(key)
                    found[key] = self.entries[key]
                    self.hits += 1
                else:
                    missing.append(key)
                    self.misses += 1
        if missing:  # the new personas, in one call of their own
            prefix = heads.encode_prefix(*_left_pad([(k[0], k[1]) for k in missing], device), logits=False)
            for i, key in enumerate(missing):
                p = len(key[0])  # left-padded: the persona is the last p columns
                kv = tuple((k[i:i + 1, :, -p:].clone(), v[i:i + 1, :, -p:].clone()) for k, v in prefix.kv)
                found[key] = kv
                self._store(key, kv)
        return found

    def _store(self, key, kv):
        size = _nbytes(kv)
        with self.lock:
            if size > self.max_bytes or key in self.entries:
                return
            self.entries[key] = kv
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.entries.popitem(last=False)
                self.bytes -= _nbytes(old)


def _nbytes(kv):
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def _real(ids, types, mask):
    """A row's real (unpadded) ids and types, as lists."""
    keep = mask.bool()
    return ids[keep].tolist(), types[keep].tolist()


def _left_pad(rows, device):
    """(ids, types, mask) [B, W] of (ids, types) lists, padded on the left (masked zeros)."""
    ids, mask = left_pad([r[0] for r in rows], 0)
    types, _ = left_pad([r[1] for r in rows], 0)
    return ids.to(device), types.to(device), mask.to(device)


def _right_aligned(kvs, lengths, device):
    """Rows' persona keys/values (at least one row has one) as one Prefix, right-aligned in
    [B, h, P, d] (P: the longest; a row without one is all padding). last_logits is None:
    the rest of each context always follows."""
    batch, width = len(kvs), max(lengths)
    mask = torch.zeros((batch, width), dtype=torch.long, device=device)
    for i, p in enumerate(lengths):
        if p:
            mask[i, width - p:] = 1
    sample = next(row for row in kvs if row is not None)
    kv = []
    for layer, (ref_k, ref_v) in enumerate(sample):
        parts_k, parts_v = [], []
        for row, p in zip(kvs, lengths):
            k, v = row[layer] if row is not None else (ref_k[:, :, :0], ref_v[:, :, :0])
            parts_k.append(F.pad(k, (0, 0, width - p, 0)))
            parts_v.append(F.pad(v, (0, 0, width - p, 0)))
        kv.append((torch.cat(parts_k, 0), torch.cat(parts_v, 0)))
    return Prefix(
        kv=tuple(kv), ids=None, types=None, mask=mask,
        next_position=torch.tensor(lengths, dtype=torch.long, device=device), last_logits=None,
    )
