"""LoRA for the Llama-family double heads, through Hugging Face's `peft`: glue only.

`--lora-rank R` wraps the backbone (`double_heads.lm`, changed in place) with a peft
`LoraConfig`: rank-R adapters on every attention and MLP projection, and the recipe's
added special tokens trainable through `trainable_token_indices` (one set of rows, shared
by the tied LM head). Everything else in the backbone is frozen. The MC head, which the
backbone never had, sits beside it in DoubleHeads and trains in full.

A fine-tune is shared as a standard PEFT adapter folder plus the MC head:
    adapter_config.json, adapter_model.safetensors   `PeftModel.from_pretrained(lm, folder)`
    mc_head.safetensors                              nn.Linear(hidden, 1): weight, bias
    transfertransfo.json                             backbone, vocabulary, special token ids
where `lm` is the backbone with its embeddings resized to `vocab_size` (transfertransfo.json).

Files of the hand-written LoRA this module replaced (artifacts with metadata format
`transfertransfo-lora`, model files trained with --lora-rank before peft) still load:
`convert_legacy_artifact` and `upgrade_legacy_state` rename their tensors to peft's.
"""
import json
import os

import torch

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.architectures import CAUSAL_LM_FAMILY

DEFAULT_ALPHA = 16.0  # --lora-alpha
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MC_HEAD_FILE = "mc_head.safetensors"
INFO_FILE = "transfertransfo.json"
LEGACY_FORMAT = "transfertransfo-lora"


# --- wrap, inspect, merge ---------------------------------------------------------------------
def lora_config(rank, alpha, new_token_ids, targets=DEFAULT_TARGETS):
    from peft import LoraConfig

    return LoraConfig(
        r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, bias="none",
        target_modules=sorted(targets), trainable_token_indices=[int(i) for i in new_token_ids],
    )


def apply_lora(double_heads, rank: int, alpha: float, new_token_ids, targets=DEFAULT_TARGETS):
    """Wrap the backbone with peft LoRA (in place) and freeze all but the adapters, the rows
    of `new_token_ids` and the MC head. Call after the embeddings have been resized."""
    from peft import get_peft_model

    if double_heads.kind not in CAUSAL_LM_FAMILY:
        raise TransfertransfoError(
            f"--lora-rank supports Llama-family backbones ({', '.join(CAUSAL_LM_FAMILY)}), "
            f"not {double_heads.kind}: use --lora-rank 0 (full fine-tuning)"
        )
    if rank <= 0:
        raise TransfertransfoError(f"LoRA rank must be positive, got {rank}")
    if is_lora(double_heads):
        raise TransfertransfoError("LoRA is already applied to this model")
    vocab = double_heads.vocab_size
    if not new_token_ids or min(new_token_ids) < 0 or max(new_token_ids) >= vocab:
        raise TransfertransfoError(f"new token ids {list(new_token_ids)} are not rows of the {vocab}-token embedding")
    leaves = {name.rsplit(".", 1)[-1] for name, m in double_heads.lm.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise TransfertransfoError(f"no Linear layers named {', '.join(missing)} in the {double_heads.kind} backbone")
    peft_model = get_peft_model(double_heads.lm, lora_config(rank, alpha, new_token_ids, targets))
    # Kept out of the module tree: the state dict keeps the backbone's own key prefix (`lm.`).
    double_heads.__dict__["peft_model"] = peft_model
    for param in double_heads.mc_head.parameters():
        param.requires_grad = True
    return double_heads


def is_lora(double_heads) -> bool:
    return double_heads.__dict__.get("peft_model") is not None


def merge_lora(double_heads):
    """Fold the adapters into the weights (peft's `merge_and_unload`), in place: an ordinary
    DoubleHeads again, every parameter trainable."""
    peft_model = double_heads.__dict__.pop("peft_model", None)
    if peft_model is not None:
        double_heads.lm = peft_model.merge_and_unload()
    for param in double_heads.parameters():
        param.requires_grad = True
    return double_heads


def trainable_parameters(double_heads) -> int:
    return sum(p.numel() for p in double_heads.parameters() if p.requires_grad)


# --- the adapter folder -----------------------------------------------------------------------
def save_adapter(double_heads, folder: str, *, backbone: str, special_ids: dict) -> list:
    """Write a LoRA double_heads as an adapter folder (see the module docstring); returns
    the file names."""
    from safetensors.torch import save_file

    if not is_lora(double_heads):
        raise TransfertransfoError("this model has no LoRA adapter: it was trained with --lora-rank 0")
    os.makedirs(folder, exist_ok=True)
    peft_model = double_heads.__dict__["peft_model"]
    peft_model.peft_config["default"].base_model_name_or_path = backbone
    peft_model.save_pretrained(folder, save_embedding_layers=False)  # the new rows are in the adapter
    card = os.path.join(folder, "README.md")
    if os.path.exists(card):  # peft's model-card template, all placeholders
        os.remove(card)
    head = {k: v.detach().cpu().contiguous() for k, v in double_heads.mc_head.state_dict().items()}
    save_file(head, os.path.join(folder, MC_HEAD_FILE), metadata={"module": "nn.Linear(hidden_size, 1)"})
    info = {"backbone": backbone, "vocab_size": double_heads.vocab_size, "special_ids": special_ids}
    with open(os.path.join(folder, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)
    return sorted(os.listdir(folder))


def read_adapter_info(folder: str) -> dict:
    """transfertransfo.json plus rank, alpha, targets and token ids from adapter_config.json."""
    paths = [os.path.join(folder, n) for n in (INFO_FILE, "adapter_config.json", "adapter_model.safetensors", MC_HEAD_FILE)]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise TransfertransfoError(f"{folder} is not a transfertransfo adapter folder: {', '.join(missing)} missing")
    try:
        with open(paths[0]) as f, open(paths[1]) as g:
            info, config = json.load(f), json.load(g)
        info.update(rank=config["r"], alpha=config["lora_alpha"], targets=tuple(config["target_modules"]),
                    new_token_ids=config["trainable_token_indices"])
    except (OSError, ValueError, KeyError) as e:
        raise TransfertransfoError(f"cannot read the adapter folder {folder}: {type(e).__name__}: {e}")
    return info


def load_adapter(double_heads, folder: str):
    """Load an adapter folder's LoRA and MC head onto a backbone DoubleHeads (resized to the
    folder's vocab_size): `PeftModel.from_pretrained`, as any peft user would."""
    from peft import PeftModel
    from safetensors.torch import load_file

    info = read_adapter_info(folder)
    if double_heads.vocab_size != info["vocab_size"]:
        raise TransfertransfoError(
            f"the adapter was trained with {info['vocab_size']} tokens, the backbone has {double_heads.vocab_size}"
        )
    try:
        peft_model = PeftModel.from_pretrained(double_heads.lm, folder, is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise TransfertransfoError(f"the adapter in {folder} does not fit the backbone: {e}")
    double_heads.__dict__["peft_model"] = peft_model
    double_heads.mc_head.load_state_dict(load_file(os.path.join(folder, MC_HEAD_FILE)))
    return double_heads


# --- the hand-written LoRA's files ------------------------------------------------------------
_LEGACY_SUFFIXES = (
    (".lora_A", ".lora_A.default.weight"),
    (".lora_B", ".lora_B.default.weight"),
    (".new_rows", ".token_adapter.trainable_tokens_delta.default"),
)


def is_legacy_state(state) -> bool:
    return any(k.endswith((".lora_A", ".new_rows")) for k in state)


def upgrade_legacy_state(state, model_keys):
    """A state dict of the hand-written LoRA (its `.lora_A`, `.new_rows`, `.new_token_ids`
    and unwrapped base weights) under peft's names `model_keys`; any other state unchanged."""
    if not is_legacy_state(state):
        return state
    model_keys, out = set(model_keys), {}
    for key, value in state.items():
        if key.endswith(".new_token_ids"):
            continue  # peft keeps them in its config
        new = next((key[: -len(old)] + peft for old, peft in _LEGACY_SUFFIXES if key.endswith(old)), key)
        if new not in model_keys:  # a wrapped module's own weight
            head, _, leaf = new.rpartition(".")
            new = next((c for c in (f"{head}.base_layer.{leaf}", f"{head}.token_adapter.base_layer.{leaf}")
                        if c in model_keys), new)
        out[new] = value
    return out


def load_legacy_artifact(path: str):
    """(tensors, metadata) of a hand-written-LoRA artifact (.safetensors)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on a bad file
        raise TransfertransfoError(f"cannot read LoRA artifact {path}: {e}")
    if meta.get("format") != LEGACY_FORMAT:
        raise TransfertransfoError(f"{path} is neither an adapter folder nor a transfertransfo LoRA artifact")
    return tensors, meta


def convert_legacy_artifact(path: str, folder: str, cache_dir=None, backbone=None) -> list:
    """Rewrite a hand-written-LoRA artifact as an adapter folder, without retraining: the
    same tensors under peft's names (LoRA A/B, the new rows as trainable-token rows, the
    MC head). Loads the backbone named in the artifact; returns the folder's file names."""
    from parlai_transfertransfo.weights import backbones

    tensors, meta = load_legacy_artifact(path)
    backbone = backbone or meta["backbone"]
    new_ids = json.loads(meta["new_token_ids"])
    double_heads = backbones.load_double_heads(backbone, cache_dir)
    double_heads.resize_token_embeddings(int(meta["vocab_size"]))
    apply_lora(double_heads, int(meta["rank"]), float(meta["alpha"]), new_ids, targets=meta["targets"].split(","))
    state = double_heads.state_dict()
    renamed = upgrade_legacy_state(tensors, state)
    unknown = sorted(set(renamed) - set(state))
    if unknown:
        raise TransfertransfoError(f"the LoRA artifact does not fit its backbone: unexpected {unknown[:3]}")
    for name, value in renamed.items():
        if state[name].shape != value.shape:
            raise TransfertransfoError(f"the LoRA artifact's {name} is {tuple(value.shape)}, the model's {tuple(state[name].shape)}")
    double_heads.load_state_dict(renamed, strict=False)
    special = json.loads(meta["special_ids"]) if "special_ids" in meta else {}
    return save_adapter(double_heads, folder, backbone=backbone, special_ids=special)


if __name__ == "__main__":  # python -m parlai_transfertransfo.weights.lora OLD.safetensors NEW_FOLDER [DATAPATH]
    import sys

    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: python -m parlai_transfertransfo.weights.lora OLD_ARTIFACT.safetensors ADAPTER_FOLDER [DATAPATH]")
    files = convert_legacy_artifact(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    print(f"wrote {sys.argv[2]}: {', '.join(files)}")
