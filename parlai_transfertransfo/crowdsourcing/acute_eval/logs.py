"""Reading the self-chat logs that ACUTE-Eval compares, with one-line errors.

A log is what `parlai self_chat --outfile F` writes: ParlAI's Conversations format, `F.jsonl`
with one conversation a line (`dialog`: a list of turns, each a list of acts with `id` and
`text`; `context`: the personas, never shown to workers) beside `F.metadata`.  Either `F` or
`F.jsonl` may be named.  Each conversation becomes a list of (role, text) utterances: the
`speaker_index`-th speaker to talk (0: the first, the `-mf` model of a self-chat) is the one
judged, every other speaker is its partner.
"""
import json
import os
from dataclasses import dataclass
from typing import List, Tuple

from parlai_transfertransfo.crowdsourcing.launch import CrowdError

SPEAKER, PARTNER = "speaker", "partner"


@dataclass
class Conversation:
    log: str  # the .jsonl file
    line: int  # its line in the file (1-based): the conversation's id in the results
    turns: List[Tuple[str, str]]  # (SPEAKER or PARTNER, text)
    speaker_id: str  # the judged speaker's id in the log, e.g. Transfertransfo_1


def parse_selfchat_logs(items) -> dict:
    """`["NAME:LOG", ...]` (the option `selfchat_logs`) -> {NAME: LOG}, in order."""
    found = {}
    for item in items:
        name, sep, path = str(item).partition(":")
        if not sep or not name or not path:
            raise CrowdError(f"selfchat_logs entry '{item}': write it as NAME:LOG (LOG: `parlai self_chat --outfile LOG`)")
        if name in found:
            raise CrowdError(f"selfchat_logs names model '{name}' twice")
        found[name] = path
    return found


def log_path(path: str) -> str:
    """`F` or `F.jsonl` (as `--outfile F` wrote it) -> the .jsonl file."""
    path = os.path.expanduser(str(path))
    if not path.endswith(".jsonl") and not os.path.isfile(path) and os.path.isfile(path + ".jsonl"):
        return path + ".jsonl"
    return path


def read_log(path: str, speaker_index: int = 0) -> List[Conversation]:
    """Every conversation of one self-chat log; CrowdError names the file and line."""
    path = log_path(path)
    if not os.path.isfile(path):
        raise CrowdError(f"self-chat log {path} does not exist (make one with `parlai self_chat ... --outfile F`)")
    conversations = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                conversations.append(_conversation(path, lineno, line, speaker_index))
    if not conversations:
        raise CrowdError(f"self-chat log {path} holds no conversations")
    return conversations


def _conversation(path, lineno, line, speaker_index):
    where = f"self-chat log {path}, line {lineno}"
    try:
        record = json.loads(line)
    except ValueError as err:
        raise CrowdError(f"{where}: not JSON ({err.msg}, column {err.pos + 1})") from None
    dialog = record.get("dialog") if isinstance(record, dict) else None
    if not isinstance(dialog, list) or not dialog:
        raise CrowdError(f"{where}: not a conversation (no \"dialog\" list of turns, as `parlai self_chat` writes)")
    utterances = []
    for t, turn in enumerate(dialog, start=1):
        acts = turn if isinstance(turn, list) else [turn]
        for act in acts:
            if not isinstance(act, dict) or not isinstance(act.get("id"), str) or not isinstance(act.get("text"), str):
                raise CrowdError(f"{where}: turn {t} has an utterance without an \"id\" and a \"text\"")
            utterances.append((act["id"], act["text"]))
    speakers = list(dict.fromkeys(who for who, _ in utterances))
    if speaker_index >= len(speakers):
        raise CrowdError(
            f"{where}: {len(speakers)} speaker(s) ({', '.join(speakers)}), so there is no speaker_index={speaker_index}"
        )
    judged = speakers[speaker_index]
    turns = [(SPEAKER if who == judged else PARTNER, text) for who, text in utterances]
    return Conversation(os.path.abspath(path), lineno, turns, judged)
