"""Key/value caches handed to the transformers backbone: grown in place while decoding, or
copied out of a packed pass.

- `as_cache(kv, layers)`: the cache a `Prefix` is continued with. transformers' own
  `DynamicLayer` concatenates, so every decoding step copies the whole cache (~11% of a
  16-row step on a CPU). `GrowingLayer` keeps the keys/values as views of a longer buffer
  and writes new tokens after them (`append`, also decode_step.py's write), in place, when
  no one else has written there.
- `PackedPass`: the cache of a packed ranking pass (packing.py). It puts each row's cached
  start (its persona) before the row's keys/values, and keeps a copy of chosen columns:
  the contexts (and the reply's `<speaker1>`), which generation then continues instead of
  running them again.
"""
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

HEADROOM = 64  # columns allocated past the end when a buffer is (re)made: a reply's steps


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views `[:, :, :n]` of a buffer with room after n
    (the view's `_tt_buffer`; its `_tt_end`: where the last write ended).

    A Prefix is never altered: a new token is written at column n of the buffer only when n
    is where the buffer's last write ended (`_tt_end`), i.e. when no other continuation of
    the same keys has used that column; otherwise (a prefix continued twice, a selected or
    trimmed copy, a full buffer) the keys move to a new buffer, as concatenation would.
    Gradients: in place only where autograd is off; with it on, plain concatenation.
    """

    def __init__(self, keys=None, values=None):
        super().__init__()
        if keys is not None:
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if torch.is_grad_enabled():
            return super().update(key_states, value_states, *args, **kwargs)
        self.keys, self.values = append(self.keys, self.values, key_states, value_states)
        return self.keys, self.values


def append(keys, values, key_states, value_states):
    """(keys, values) followed by the new columns, written in place after them when their
    buffer has room no one else has used (GrowingLayer), else in a new buffer. Autograd off."""
    n = keys.shape[-2] if keys.dim() == 4 else 0
    add = key_states.shape[-2]
    if not (_writable_after(keys, n, add) and _writable_after(values, n, add)):
        keys = _rebuffer(keys, key_states, n, add)
        values = _rebuffer(values, value_states, n, add)
    base_k, base_v = keys._tt_buffer, values._tt_buffer
    base_k[:, :, n:n + add] = key_states
    base_v[:, :, n:n + add] = value_states
    base_k._tt_end = base_v._tt_end = n + add
    return _view(base_k, n + add), _view(base_v, n + add)


def _writable_after(view, n, add):
    """Whether `view` is `base[:, :, :n]` of a buffer with `add` free columns after n that
    no other view has written (and that this mode may write: inference tensors only in
    inference mode)."""
    base = getattr(view, "_tt_buffer", None)
    return (
        view.dim() == 4 and base is not None and getattr(base, "_tt_end", None) == n
        and base.dim() == 4 and base.shape[-2] >= n + add
        and view.data_ptr() == base.data_ptr() and view.shape[:2] == base.shape[:2]
        and view.stride() == base.stride()
        and (torch.is_inference_mode_enabled() or not base.is_inference())
    )


def _rebuffer(view, new, n, add):
    """A fresh buffer with room for `add` more columns (and HEADROOM), holding `view`'s
    n columns; returned as its `[:, :, :n]` view."""
    shape = (*new.shape[:2], n + add + HEADROOM, new.shape[-1])
    base = new.new_empty(shape)
    if n:
        base[:, :, :n] = view
    base._tt_end = n
    return _view(base, n)


def _view(base, n):
    """`base[:, :, :n]`, knowing its buffer (a view's `_base` is not kept in inference mode)."""
    view = base[:, :, :n]
    view._tt_buffer = base
    return view


def as_cache(kv, layers):
    """A fresh cache over a Prefix's per-layer (keys, values), without copying them; empty
    (`kv` None) for a first pass. `layers`: the backbone's number of layers.

    Plain full-history layers even for models whose config asks for sliding windows: the
    attention mask, built from the config, still applies the window.
    """
    kv = kv or [(None, None)] * layers
    return _cache([GrowingLayer(k, v) for k, v in kv])


def _cache(layers):
    """A DynamicCache over exactly these layers (none added lazily)."""
    cache = DynamicCache()
    cache.layers = layers
    cache.layer_class_to_replicate = None
    return cache


class _PackedLayer(DynamicLayer):
    """Passes a layer's keys/values through, after the rows' cached start `past` (keys,
    values [R, h, M, d]) if any, and keeps a copy of columns `index` of them if any."""

    def __init__(self, past, index):
        super().__init__()
        self.past, self.index, self.kept = past, index, None

    def update(self, key_states, value_states, *args, **kwargs):
        if self.past is not None:
            key_states = torch.cat([self.past[0], key_states], 2)
            value_states = torch.cat([self.past[1], value_states], 2)
        if self.index is not None:
            self.kept = (_columns(key_states, self.index), _columns(value_states, self.index))
        return key_states, value_states

    def get_seq_length(self):
        return 0  # the packed rows' own mask covers the start: nothing for the model to add


def _columns(states, index):
    """states [R, h, W, d] at index = (rows, columns) [B, S] -> [B, h, S, d]: only those
    columns are copied."""
    rows, columns = index
    return states[rows, :, columns].transpose(1, 2).contiguous()  # [B, S, h, d] -> [B, h, S, d]


class PackedPass:
    """The cache of one packed pass (packing.py): each row's keys/values continue its
    cached start `past` (per layer (keys, values) [R, h, M, d], or None), and those at
    `keep` = (rows, columns) [B, S] (of [R, M + W], or None) of every layer are kept, in
    that [B, S] layout: `kept()` after the pass."""

    def __init__(self, layers, past=None, keep=None):
        past = past or [None] * layers
        self.cache = _cache([_PackedLayer(layer_past, keep) for layer_past in past])

    def kept(self):
        return tuple(layer.kept for layer in self.cache.layers)
