"""LoRA for the Llama-family double heads: small trainable deltas over a frozen backbone.

What trains (everything else is frozen, `requires_grad=False`, so ParlAI's optimizer never
sees it, whatever its weight decay):
- `lora_A` [r, in] and `lora_B` [out, r] beside each target Linear: W x + (alpha/r) B A x.
  B starts at zero, so the wrapped model computes exactly what the backbone did.
- `new_rows` [n, H]: the embedding rows of the recipe's added special tokens, held apart
  from the frozen vocabulary (also the output rows when the LM head is tied to them).
- the MC head, which the backbone never had.

Those tensors are the whole fine-tune: `save_artifact` writes them (a few MB) with
safetensors, `load_lora_state` puts them back on a freshly wrapped backbone, and
`merge_lora` folds them into plain Linear/Embedding modules for inference.

The wrappers subclass `nn.Linear` / `nn.Embedding` and keep the original `weight`
Parameter objects, so the backbone's state-dict keys and weight tying are unchanged and
the LoRA tensors only add keys.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.inputs import SPECIAL_TOKENS
from parlai_transfertransfo.modeling import CAUSAL_LM_FAMILY

DEFAULT_ALPHA = 16.0  # --lora-alpha
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ARTIFACT_FORMAT = "transfertransfo-lora"
ARTIFACT_VERSION = "1"
_ARTIFACT_SUFFIXES = (".lora_A", ".lora_B", ".new_rows", ".new_token_ids")


class LoRALinear(nn.Linear):
    """`base(x) + scaling * B(A(x))`, sharing the base Linear's weight and bias."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        like = dict(dtype=base.weight.dtype, device=base.weight.device)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear, and loralib

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def merged(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        with torch.no_grad():
            self.weight += (self.lora_B @ self.lora_A) * self.scaling
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self):
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


class NewRowsEmbedding(nn.Embedding):
    """An embedding whose rows `new_token_ids` come from the trainable `new_rows`."""

    def __init__(self, base: nn.Embedding, new_token_ids):
        super().__init__(
            base.num_embeddings, base.embedding_dim, padding_idx=base.padding_idx,
            max_norm=base.max_norm, norm_type=base.norm_type,
            scale_grad_by_freq=base.scale_grad_by_freq, sparse=base.sparse, device="meta",
        )
        self.weight = base.weight
        ids = torch.as_tensor(new_token_ids, dtype=torch.long, device=base.weight.device)
        self.register_buffer("new_token_ids", ids)
        self.new_rows = nn.Parameter(base.weight.detach()[ids].clone())
        slot = torch.full((base.num_embeddings,), -1, dtype=torch.long, device=ids.device)
        slot[ids] = torch.arange(len(ids), device=ids.device)
        self.register_buffer("slot", slot, persistent=False)  # token id -> row of new_rows, or -1

    def forward(self, ids):
        out = super().forward(ids)
        slot = self.slot[ids]
        return torch.where((slot >= 0).unsqueeze(-1), self.new_rows[slot.clamp(min=0)], out)

    def merged(self) -> nn.Embedding:
        embedding = nn.Embedding(
            self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx,
            max_norm=self.max_norm, norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq, sparse=self.sparse, device="meta",
        )
        with torch.no_grad():
            self.weight[self.new_token_ids] = self.new_rows
        embedding.weight = self.weight
        return embedding


class NewRowsHead(nn.Linear):
    """An LM head whose logits for `new_token_ids` use `new_rows` (shared with the input
    embedding when the backbone ties them)."""

    def __init__(self, base: nn.Linear, new_token_ids, new_rows=None):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        ids = torch.as_tensor(new_token_ids, dtype=torch.long, device=base.weight.device)
        self.register_buffer("new_token_ids", ids)
        self.new_rows = new_rows if new_rows is not None else nn.Parameter(base.weight.detach()[ids].clone())

    def forward(self, hidden):
        logits = F.linear(hidden, self.weight, self.bias)
        bias = None if self.bias is None else self.bias[self.new_token_ids]
        return logits.index_copy(-1, self.new_token_ids, F.linear(hidden, self.new_rows, bias))

    def merged(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        with torch.no_grad():
            self.weight[self.new_token_ids] = self.new_rows
        linear.weight, linear.bias = self.weight, self.bias
        return linear


# --- wrap, inspect, merge ---------------------------------------------------------------------
def apply_lora(double_heads, rank: int, alpha: float, new_token_ids, targets=DEFAULT_TARGETS):
    """Wrap `targets` Linears of every layer with LoRA and freeze all but the LoRA tensors,
    the rows of `new_token_ids` and the MC head. Returns double_heads (changed in place).

    Call after the embeddings have been resized for the special tokens.
    """
    if double_heads.kind not in CAUSAL_LM_FAMILY:
        raise TransfertransfoError(
            f"--lora-rank supports Llama-family backbones ({', '.join(CAUSAL_LM_FAMILY)}), "
            f"not {double_heads.kind}: use --lora-rank 0 (full fine-tuning)"
        )
    if rank <= 0:
        raise TransfertransfoError(f"LoRA rank must be positive, got {rank}")
    if is_lora(double_heads):
        raise TransfertransfoError("LoRA is already applied to this model")
    new_token_ids = [int(i) for i in new_token_ids]
    vocab = double_heads.vocab_size
    if not new_token_ids or min(new_token_ids) < 0 or max(new_token_ids) >= vocab:
        raise TransfertransfoError(f"new token ids {new_token_ids} are not rows of the {vocab}-token embedding")
    targets = tuple(targets)
    wrapped = set()
    for name, module in list(double_heads.lm.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in targets and type(module) is nn.Linear:
            _set_module(double_heads.lm, name, LoRALinear(module, rank, alpha))
            wrapped.add(leaf)
    missing = [t for t in targets if t not in wrapped]
    if missing:
        raise TransfertransfoError(f"no Linear layers named {', '.join(missing)} in the {double_heads.kind} backbone")

    lm = double_heads.lm
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    new_embed = NewRowsEmbedding(embed, new_token_ids)
    lm.set_input_embeddings(new_embed)
    if head is not None:
        lm.set_output_embeddings(NewRowsHead(head, new_token_ids, new_embed.new_rows if tied else None))

    for name, param in double_heads.named_parameters():
        param.requires_grad = name.endswith((".lora_A", ".lora_B", ".new_rows")) or name.startswith("mc_head.")
    return double_heads


def is_lora(double_heads) -> bool:
    return any(isinstance(m, (LoRALinear, NewRowsEmbedding, NewRowsHead)) for m in double_heads.modules())


def lora_state(double_heads) -> dict:
    """The trained tensors by their double_heads state-dict names: LoRA A/B, the new
    token rows and their ids, the MC head. A tied head's `new_rows` is stored once."""
    if not is_lora(double_heads):
        raise TransfertransfoError("this model has no LoRA: train it with --lora-rank > 0")
    return _artifact_tensors(double_heads.state_dict())


def load_lora_state(double_heads, tensors: dict):
    """Copy an artifact's tensors into a double_heads wrapped by `apply_lora` the same way."""
    expected = lora_state(double_heads)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise TransfertransfoError(
            "the LoRA artifact does not fit this model: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]} (other rank, targets or backbone?)"
        )
    for name, value in tensors.items():
        if name.endswith(".new_token_ids") and not torch.equal(expected[name], value.to(expected[name].device)):
            raise TransfertransfoError(
                f"the LoRA artifact's new token ids {value.tolist()} differ from the model's "
                f"{expected[name].tolist()}: apply_lora with the artifact's new_token_ids"
            )
        if expected[name].shape != value.shape:
            raise TransfertransfoError(
                f"the LoRA artifact's {name} is {tuple(value.shape)}, the model's is {tuple(expected[name].shape)}"
            )
    double_heads.load_state_dict(tensors, strict=False)
    return double_heads


def merge_lora(double_heads):
    """Fold every delta into the base weights and put plain modules back (in place).

    Afterwards the model is an ordinary DoubleHeads: same outputs (to float rounding), no
    extra cost at inference, and every parameter trainable again.
    """
    lm = double_heads.lm
    for name, module in list(lm.named_modules()):
        if isinstance(module, LoRALinear):
            _set_module(lm, name, module.merged())
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if isinstance(embed, NewRowsEmbedding):
        lm.set_input_embeddings(embed.merged())
    if isinstance(head, NewRowsHead):
        lm.set_output_embeddings(head.merged())
    for param in double_heads.parameters():
        param.requires_grad = True
    return double_heads


def trainable_parameters(double_heads) -> int:
    return sum(p.numel() for p in double_heads.parameters() if p.requires_grad)


# --- the artifact file ------------------------------------------------------------------------
def _artifact_tensors(state_dict, prefix=""):
    out, seen = {}, set()
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if not (name.endswith(_ARTIFACT_SUFFIXES) or name.startswith("mc_head.")):
            continue
        if name.endswith(".new_rows"):  # a tied head shares the embedding's rows
            ptr = value.untyped_storage().data_ptr(), value.storage_offset()
            if ptr in seen:
                continue
            seen.add(ptr)
        if name.endswith(".new_token_ids") and "lm_head" in name:
            continue  # the same ids as the embedding's
        out[name] = value.detach().cpu().contiguous()
    return out


def artifact_metadata(tensors, *, rank, alpha, backbone, vocab_size) -> dict:
    """safetensors metadata (strings only): what `build` needs to rebuild the same model."""
    ids = next((v.tolist() for k, v in tensors.items() if k.endswith("embed_tokens.new_token_ids")), None)
    if ids is None:
        ids = next(v.tolist() for k, v in tensors.items() if k.endswith(".new_token_ids"))
    targets = sorted({k.rsplit(".", 2)[-2] for k in tensors if k.endswith(".lora_A")})
    appended = sum(1 for i in ids if i >= vocab_size - len(ids))
    meta = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "rank": str(int(rank)),
        "alpha": repr(float(alpha)),
        "targets": ",".join(targets),
        "backbone": str(backbone),
        "vocab_size": str(int(vocab_size)),
        "base_vocab_size": str(int(vocab_size) - appended),
        "new_token_ids": json.dumps(ids),
    }
    if len(ids) == len(SPECIAL_TOKENS):
        meta["special_ids"] = json.dumps(dict(zip(SPECIAL_TOKENS, ids)))
    return meta


def save_artifact(double_heads, path: str, *, backbone: str) -> int:
    """Write the LoRA artifact of a wrapped double_heads; returns its size in bytes."""
    tensors = lora_state(double_heads)
    rank, alpha = next((m.rank, m.alpha) for m in double_heads.modules() if isinstance(m, LoRALinear))
    meta = artifact_metadata(tensors, rank=rank, alpha=alpha, backbone=backbone, vocab_size=double_heads.vocab_size)
    return _write(tensors, meta, path)


def load_artifact(path: str):
    """(tensors, metadata) of an artifact; metadata has `rank`/`alpha`/`vocab_size`/... parsed."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise TransfertransfoError(f"no LoRA artifact at {path}")
    try:
        with safe_open(path, framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on a bad file
        raise TransfertransfoError(f"cannot read LoRA artifact {path}: {e}")
    if raw.get("format") != ARTIFACT_FORMAT:
        raise TransfertransfoError(f"{path} is not a transfertransfo LoRA artifact")
    meta = dict(raw)
    meta.update(
        rank=int(raw["rank"]), alpha=float(raw["alpha"]), targets=tuple(raw["targets"].split(",")),
        vocab_size=int(raw["vocab_size"]), base_vocab_size=int(raw["base_vocab_size"]),
        new_token_ids=json.loads(raw["new_token_ids"]),
    )
    if "special_ids" in raw:
        meta["special_ids"] = json.loads(raw["special_ids"])
    return tensors, meta


def extract_artifact(model_file: str, out_path: str) -> int:
    """Write the artifact of a ParlAI model file trained with --lora-rank; returns bytes.

    Rank comes from the tensors; alpha and the backbone name from `<model_file>.opt`.
    """
    from parlai.core.opt import Opt

    from parlai_transfertransfo.safe_load import load_states

    if not os.path.isfile(model_file) or not os.path.isfile(model_file + ".opt"):
        raise TransfertransfoError(f"no ParlAI model file (and .opt) at {model_file}")
    opt = Opt.load(model_file + ".opt")
    state = load_states(model_file)["model"]  # weights-only: never runs code
    tensors = _artifact_tensors(state, prefix="double_heads.")
    lora_a = [v for k, v in tensors.items() if k.endswith(".lora_A")]
    if not lora_a:
        raise TransfertransfoError(f"{model_file} was not trained with LoRA (--lora-rank > 0)")
    embed = next(k for k in state if k.startswith("double_heads.") and k.endswith("embed_tokens.weight"))
    meta = artifact_metadata(
        tensors, rank=lora_a[0].shape[0], alpha=opt.get("lora_alpha", DEFAULT_ALPHA),
        backbone=opt.get("model_name"), vocab_size=state[embed].shape[0],
    )
    return _write(tensors, meta, out_path)


def _write(tensors, meta, path) -> int:
    from safetensors.torch import save_file

    from parlai_transfertransfo.checkpointing import atomic_file

    with atomic_file(path) as tmp:  # a killed run never leaves a half-written artifact
        save_file(tensors, tmp, metadata=meta)
    return os.path.getsize(path)


def _set_module(root, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
