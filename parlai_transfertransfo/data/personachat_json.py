"""Checked reading of the recipe's `personachat_self_original.json`.

    {"train": [{"personality": ["i like to remodel homes .", ...],
                "utterances": [{"history": ["hi , how are you ?"],
                                "candidates": ["...", ..., "gold reply"]}, ...]}, ...],
     "valid": [...]}

Each utterance's `history` is the whole dialog so far, partner's message last, and the
gold reply is the last candidate.  `episodes()` turns a split into the tuples ParlAI's
ConvAI2 teacher yields for the same dialog (persona lines first, `your persona: ` each).
"""
import json
from typing import Iterator, List, Tuple

from parlai_transfertransfo.errors import TransfertransfoError

SPLITS = ("train", "valid")


def _fail(path, where, problem):
    raise TransfertransfoError(f"{path}: {where}: {problem}")


def _load(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise TransfertransfoError(f"{path}: cannot read: {err.strerror}")
    if not raw.strip():
        raise TransfertransfoError(f"{path}: empty file: no JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        raise TransfertransfoError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {column})"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TransfertransfoError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})")


def _strings(path, where, value, what):
    if not isinstance(value, list) or not value:
        _fail(path, where, f"{what} must be a non-empty list of strings, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            _fail(path, f"{where}[{i}]", f"expected a string, got {_kind(item)}")
    return value


def _kind(value):
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    return {dict: "an object", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _key(path, where, obj, key):
    if not isinstance(obj, dict):
        _fail(path, where, f"expected an object, got {_kind(obj)}")
    if key not in obj:
        found = ", ".join(repr(k) for k in obj) or "none"
        _fail(path, where, f"missing key {key!r} (keys found: {found})")
    return obj[key]


def read_split(path, split) -> List[Tuple[List[str], List[dict]]]:
    """[(personality, utterances)] of one split, every field checked."""
    data = _load(path)
    dialogs = _key(path, "$", data, split)
    where = f"$.{split}"
    if not isinstance(dialogs, list):
        _fail(path, where, f"expected a list of dialogs, got {_kind(dialogs)}")
    if not dialogs:
        _fail(path, where, "no dialogs")
    out = []
    for d, dialog in enumerate(dialogs):
        dwhere = f"{where}[{d}]"
        persona = _strings(path, f"{dwhere}.personality", _key(path, dwhere, dialog, "personality"), "personality")
        utterances = _key(path, dwhere, dialog, "utterances")
        if not isinstance(utterances, list) or not utterances:
            _fail(path, f"{dwhere}.utterances", f"expected a non-empty list, got {_kind(utterances)}")
        for u, utterance in enumerate(utterances):
            uwhere = f"{dwhere}.utterances[{u}]"
            _strings(path, f"{uwhere}.history", _key(path, uwhere, utterance, "history"), "history")
            _strings(path, f"{uwhere}.candidates", _key(path, uwhere, utterance, "candidates"), "candidates")
        out.append((persona, utterances))
    return out


def episodes(dialogs) -> Iterator[Tuple[list, bool]]:
    """([text, [gold], reward, candidates], new_episode), shaped like the convai2 teacher's."""
    for persona, utterances in dialogs:
        for i, utterance in enumerate(utterances):
            text = utterance["history"][-1]
            if i == 0:
                text = "\n".join([f"your persona: {p}" for p in persona] + [text])
            candidates = utterance["candidates"]
            yield [text, [candidates[-1]], 0, list(candidates)], i == 0


def dialogs_to_json(dialogs) -> dict:
    """The inverse, from `fbdialog.Dialog`s: a split in the recipe's JSON layout (tests
    build a real JSON file from the ConvAI2 validation dialogs with it)."""
    out = []
    for dialog in dialogs:
        persona = [c[len("your persona:"):].strip() for c in dialog.context if c.startswith("your persona:")]
        history, utterances = [], []
        for turn in dialog.turns:
            history = history + [turn.text]
            utterances.append({"history": list(history), "candidates": list(turn.candidates)})
            history = history + [turn.labels[0]]
        out.append({"personality": persona, "utterances": utterances})
    return out
