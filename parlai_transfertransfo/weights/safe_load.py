"""Model files are data, never code.

A pickle can import and call anything while it loads. ParlAI reads model files with its own
`pickle_module`, which turns torch's weights-only protection off, so a crafted `model` file
next to a real `.opt` ran a shell command as soon as `parlai interactive -mf` opened it.
Everything a transfertransfo agent reads (--model-file, --init-model, .checkpoint, zoo
builds, export_transfertransfo, the released-checkpoint converter; optimizer and scheduler
states included) comes through `load_states`: torch's weights-only unpickler, which knows
tensors, containers and numbers, plus `SAFE_GLOBALS`, the few data-only classes ParlAI's
states may hold. Anything else is refused in one line naming the file, before it runs.

`--trust-model-file true` is the one way to read a legacy pickle that needs more. It counts
only on the command line: it is never saved into a `.opt`, and a `.opt` that carries it is
ignored, so a shared model cannot vouch for itself.
"""
import os
import pickle
import re
import warnings

from parlai_transfertransfo.errors import TransfertransfoError

TRUST_OPTION = "trust_model_file"


class UnsafeModelFile(TransfertransfoError):
    """A file whose loading would import and run code."""


def add_cmdline_args(group):
    group.add_argument(
        "--trust-model-file", type="bool", default=False,
        help="load model files with the full pickle loader, which can run code: only for "
        "legacy files you made or fully trust (never saved in .opt)",
    )


def trusted(opt) -> bool:
    """--trust-model-file, from the command line only (`opt['override']`), never from a file."""
    return bool((opt.get("override") or {}).get(TRUST_OPTION))


def safe_globals():
    """Data-only classes that legitimately appear in ParlAI states: numpy scalars and dtypes
    (metric values that reach scheduler or train statistics) and ParlAI's `Opt` dict."""
    import numpy as np
    from parlai.core.opt import Opt

    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    dtypes = [d for d in dtypes if d is not np.dtypes.ObjectDType]
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    return [core.multiarray.scalar, np.dtype, Opt, *dtypes]


def load_states(path, trust=False, mmap=False):
    """The dict saved at `path` (ParlAI's model file layout: `model`, `optimizer`, ...).

    Raises one-line TransfertransfoErrors: UnsafeModelFile for a file that needs code to
    load, TransfertransfoError for one that is missing, empty, truncated or not torch data.
    """
    import torch

    if not os.path.isfile(path):
        raise TransfertransfoError(f"{path}: no such model file")
    if os.path.getsize(path) == 0:
        raise TransfertransfoError(f"cannot load {path}: the file is empty (an interrupted copy or save?)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "pickle protocol" and "weights_only" notes
        if trust:
            import parlai.utils.pickle

            from parlai.utils import logging

            logging.warning(f"loading {path} with the full unpickler (--trust-model-file true)")
            loader = dict(weights_only=False, pickle_module=parlai.utils.pickle)
        else:
            loader = dict(weights_only=True)
        try:
            with torch.serialization.safe_globals(safe_globals()):
                states = torch.load(path, map_location="cpu", mmap=mmap or None, **loader)
        except pickle.UnpicklingError as e:
            raise _refusal(path, e) from None
        except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError,
                AttributeError, ImportError, MemoryError, OverflowError, UnicodeDecodeError) as e:
            raise TransfertransfoError(f"cannot load {path}: {_damage(e, path)}") from None
    if not isinstance(states, dict):
        raise TransfertransfoError(
            f"cannot load {path}: it holds a {type(states).__name__}, not a ParlAI model file's dict"
        )
    return states


def _refusal(path, error):
    message = str(error)
    blocked = re.search(r"GLOBAL ([\w.]+)", message)
    advice = "add --trust-model-file true only if you made this file or trust who did"
    if blocked:
        return UnsafeModelFile(
            f"refusing to load {path}: it would import and call {blocked.group(1)}, which can "
            f"run any code (nothing in it was run); {advice}"
        )
    detail = re.search(r"WeightsUnpickler error: \s*(.+?)\s*(?:\n|$)", message)
    detail = detail.group(1) if detail else _first_line(message)
    if "invalid load key" in message or "Unsupported operand" in message:
        return TransfertransfoError(
            f"cannot load {path}: not a file saved by torch.save, or damaged ({detail}); if it "
            f"is an old pickle, {advice}"
        )
    return UnsafeModelFile(f"refusing to load {path}: it is not plain tensor data ({detail}); {advice}")


def _damage(error, path):
    text = _first_line(str(error))
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"  # torch.save's format: a zip archive
    if zipped or "central directory" in text or "failed reading zip archive" in text:
        return "the file is truncated or damaged (an interrupted download or save?)"
    if isinstance(error, EOFError):
        return "the file ends too early (an interrupted download or save?)"
    detail = f"{type(error).__name__}: {text}" if text else type(error).__name__
    # neither torch.save's zip archive nor a pickle it could read (random bytes can fail
    # any of these ways: UnicodeDecodeError, ValueError, ...)
    return f"not a file saved by torch.save, or damaged ({detail})"


def _first_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def load_agent_states(agent, path):
    """TorchAgent.load for our agent: the states of `path` through `load_states`, the model
    weights loaded strictly (a mismatch is one line), the optimizer's when it exists."""
    states = load_states(path, trust=trusted(agent.opt))
    weights = states.get("model")
    if not isinstance(weights, dict) or not weights:
        raise TransfertransfoError(f"cannot load {path}: it holds no model weights (keys: {sorted(states)[:5]})")
    if not any(str(k).startswith("double_heads.") for k in weights):
        raise TransfertransfoError(
            f"cannot load {path}: its weights are not a transfertransfo model's (another "
            f"agent's model file? first weight: {next(iter(weights))})"
        )
    try:
        agent.load_state_dict(weights)
    except RuntimeError as e:
        raise TransfertransfoError(
            f"cannot load {path}: its weights do not fit the model its .opt and "
            f".hf_config.json describe ({_mismatch(e)})"
        ) from None
    if "optimizer" in states and hasattr(agent, "optimizer"):
        agent.optimizer.load_state_dict(states["optimizer"])
    return states


def _mismatch(error):
    text = str(error)
    missing = re.search(r"Missing key\(s\) in state_dict: ([^.]+(?:\.[^,\s]+)*)", text)
    unexpected = re.search(r"Unexpected key\(s\) in state_dict: ([^\s,]+)", text)
    size = re.search(r"size mismatch for ([^:]+): (.+?)\.(?:\s|$)", text)
    parts = []
    if size:
        parts.append(f"size mismatch for {size.group(1)}: {size.group(2)}")
    if missing:
        parts.append(f"missing {missing.group(1).split(',')[0]}")
    if unexpected:
        parts.append(f"unexpected {unexpected.group(1).rstrip(',')}")
    return "; ".join(parts) or _first_line(text)


def require_dictionary(opt):
    """A model file is read with the tokenizer saved beside it (`<model>.dict` and its
    `.dict.hf` folder). Without it, --model-name's tokenizer would be a guess that may not
    match the weights: refuse instead."""
    import os

    for key in ("model_file", "init_model"):
        path = opt.get(key)
        if path and os.path.isfile(path) and os.path.isfile(path + ".hf_config.json"):
            if not os.path.exists(path + ".dict"):
                raise TransfertransfoError(
                    f"{path}.dict is missing: the tokenizer this model was trained with is saved "
                    f"there (with {os.path.basename(path)}.dict.hf); copy it from where the model came from"
                )
            return
