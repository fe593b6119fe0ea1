"""Checked reading of ConvAI2 files in ParlAI's FbDialog text format.

    1 your persona: i read twenty books a year.
    2 hello what are doing today ?<TAB>i am good , i just got off work .<TAB><TAB>c1|c2|...

Every line starts with its index in the dialog; a dialog starts at index 1 and counts up
by one.  `your persona:` / `partner's persona:` lines come before the first utterance.
ParlAI's own `FbDeprecatedDialogTeacher` accepts almost anything (a missing tab makes a
context line, a gold label absent from the candidates is silently served); this reader
refuses, and `episodes()` then yields exactly the tuples that teacher would have yielded,
so a teacher built on it serves messages identical to `-t convai2`'s.
"""
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from parlai_transfertransfo.errors import TransfertransfoError

PERSONA_PREFIXES = ("your persona:", "partner's persona:")
FORMAT_HINT = "text<TAB>label<TAB>reward<TAB>cand1|cand2|...|gold"


@dataclass
class Turn:
    text: str
    labels: List[str]
    reward: Optional[float]
    candidates: Optional[List[str]]
    line: int


@dataclass
class Dialog:
    line: int  # where the dialog starts in its file
    context: List[str] = field(default_factory=list)  # persona lines
    turns: List[Turn] = field(default_factory=list)


def _fail(path, lineno, problem):
    raise TransfertransfoError(f"{path}:{lineno}: {problem}")


def _decoded_lines(path) -> Iterator[Tuple[int, str]]:
    """(line number, text) with UTF-8 checked line by line, so an error names its line."""
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise TransfertransfoError(f"{path}: cannot read: {err.strerror}")
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                _fail(
                    path,
                    lineno,
                    f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})",
                )


def _parse_turn(path, lineno, rest, require_candidates) -> Turn:
    fields = [f.strip() for f in rest.split("\t")]
    if len(fields) > 4:
        _fail(path, lineno, f"{len(fields)} tab-separated fields, expected at most 4 ({FORMAT_HINT})")
    text, label = fields[0], fields[1]
    if not label:
        _fail(path, lineno, f"no label after the first tab ({FORMAT_HINT})")
    labels = label.split("|")
    reward = None
    if len(fields) > 2 and fields[2]:
        try:
            reward = float(fields[2])
        except ValueError:
            _fail(path, lineno, f"reward field {fields[2]!r} is not a number")
    candidates = fields[3].split("|") if len(fields) > 3 and fields[3] else None
    if candidates is None and require_candidates:
        _fail(path, lineno, f"no candidates, and this file needs them ({FORMAT_HINT})")
    if candidates is not None:
        for gold in labels:
            if gold not in candidates:
                _fail(
                    path,
                    lineno,
                    f"gold label {gold!r} is not among its {len(candidates)} candidates",
                )
    return Turn(text, labels, reward, candidates, lineno)


def iter_dialogs(path, require_candidates=True) -> Iterator[Dialog]:
    """The dialogs of a ConvAI2 text file one by one (a 150 MB training file need not fit in
    memory to be checked); a `TransfertransfoError` at the first bad line."""
    dialog: Optional[Dialog] = None
    last_index = 0
    for lineno, line in _decoded_lines(path):
        line = line.strip().replace("\\n", "\n")  # as FbDeprecatedDialogTeacher reads it
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if not head.isdigit() or int(head) < 1:
            _fail(path, lineno, f"line does not start with a dialog index: {line[:40]!r}")
        index = int(head)
        if index == 1:
            if dialog is not None:
                if not dialog.turns:
                    _fail(path, dialog.line, "dialog has no utterance lines")
                yield dialog
            dialog = Dialog(line=lineno)
        elif dialog is None:
            _fail(path, lineno, f"first line has dialog index {index}, expected 1")
        elif index != last_index + 1:
            _fail(
                path,
                lineno,
                f"dialog index jumps from {last_index} to {index} "
                f"(expected {last_index + 1}, or 1 to start a new dialog)",
            )
        last_index = index
        if "\t" in rest:
            dialog.turns.append(_parse_turn(path, lineno, rest, require_candidates))
        elif rest.startswith(PERSONA_PREFIXES) and not dialog.turns:
            dialog.context.append(rest.strip())
        else:
            _fail(path, lineno, f"no tab-separated fields: expected a persona line or {FORMAT_HINT}")
    if dialog is None:
        raise TransfertransfoError(f"{path}: empty file: no dialogs")
    if not dialog.turns:
        _fail(path, dialog.line, "dialog has no utterance lines")
    yield dialog


def read_dialogs(path, require_candidates=True) -> List[Dialog]:
    """All dialogs of a ConvAI2 text file, every line checked."""
    return list(iter_dialogs(path, require_candidates))


def episodes(dialogs) -> Iterator[Tuple[list, bool]]:
    """What `FbDeprecatedDialogTeacher.setup_data` yields: ([text, labels, reward(,
    candidates)], new_episode), the context joined to the first utterance by newlines."""
    for dialog in dialogs:
        for i, turn in enumerate(dialog.turns):
            text = "\n".join(dialog.context + [turn.text]).strip() if i == 0 else turn.text
            reward = 0 if turn.reward is None else turn.reward
            entry = [text, turn.labels, reward]
            if turn.candidates is not None:
                entry.append(turn.candidates)
            yield entry, i == 0


def format_dialog(dialog) -> str:
    """A dialog back in the text format, one line per persona line and utterance."""
    lines = list(dialog.context)
    for turn in dialog.turns:
        reward = "" if turn.reward is None else f"{turn.reward:g}"
        fields = [turn.text, "|".join(turn.labels), reward]
        if turn.candidates is not None:
            fields.append("|".join(turn.candidates))
        lines.append("\t".join(fields))
    return "".join(f"{i} {line}\n" for i, line in enumerate(lines, start=1))


def split_dialogs(dialogs, valid_split, fold) -> list:
    """The dialogs of one fold: the last `valid_split` dialogs (a fraction if < 1, else a
    count) are valid and test, the rest train; 0 serves the whole file to every fold."""
    if valid_split < 0:
        raise TransfertransfoError(f"--valid-split must be >= 0, got {valid_split:g}")
    if valid_split == 0:
        return list(dialogs)
    n_valid = round(valid_split * len(dialogs)) if valid_split < 1 else int(valid_split)
    if valid_split >= 1 and valid_split != int(valid_split):
        raise TransfertransfoError(
            f"--valid-split {valid_split:g}: give a fraction below 1 or a whole number of dialogs"
        )
    if not 0 < n_valid < len(dialogs):
        raise TransfertransfoError(
            f"--valid-split {valid_split:g} leaves {len(dialogs) - n_valid} of "
            f"{len(dialogs)} dialogs for training and {n_valid} for validation; both must be > 0"
        )
    cut = len(dialogs) - n_valid
    return list(dialogs[:cut]) if fold == "train" else list(dialogs[cut:])
