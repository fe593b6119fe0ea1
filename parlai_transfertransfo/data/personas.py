"""Bot personas for interactive chat, offline.

ParlAI's interactive world samples personas from `convai2:both` training data, which
these machines cannot download.  We package the 17878 PERSONA-CHAT training personas
(CC BY 4.0, see assets/NOTICE) instead: one Python-literal list of sentences a line.

    persona = random_persona(random.Random(0))        # ['i like to remodel homes .', ...]
    persona = parse_persona_arg("i love cats.|i am a nurse.")
    first_text = persona_text(persona) + "\\n" + "hello !"
"""
import ast
import functools
import os
import random
from typing import List, Optional

from parlai_transfertransfo.errors import TransfertransfoError

PERSONAS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "personas_train.txt")

# the persona of the first ConvAI2 validation dialog
DEFAULT_PERSONA = [
    "i read twenty books a year.",
    "i'm a stunt double as my second job.",
    "i only eat kosher.",
    "i was raised in a single parent household.",
]

YOUR_PERSONA = "your persona: "


@functools.lru_cache(maxsize=4)
def _load(path) -> tuple:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise TransfertransfoError(f"{path}: cannot read personas: {err.strerror}")
    except UnicodeDecodeError as err:
        raise TransfertransfoError(f"{path}: not valid UTF-8 (offset {err.start})")
    personas = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            persona = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            raise TransfertransfoError(f"{path}:{lineno}: not a Python list of sentences")
        if not isinstance(persona, list) or not persona or not all(isinstance(s, str) and s.strip() for s in persona):
            raise TransfertransfoError(f"{path}:{lineno}: expected a non-empty list of sentences")
        personas.append(tuple(persona))
    if not personas:
        raise TransfertransfoError(f"{path}: empty file: no personas")
    return tuple(personas)


def load_personas(path: Optional[str] = None) -> List[List[str]]:
    """All personas of a file (default: the packaged training personas), each a list of sentences."""
    return [list(p) for p in _load(path or PERSONAS_FILE)]


def random_persona(rng: Optional[random.Random] = None, path: Optional[str] = None) -> List[str]:
    """One persona drawn uniformly; pass a seeded `random.Random` to make it reproducible."""
    personas = _load(path or PERSONAS_FILE)
    return list((rng or random).choice(personas))


def parse_persona_arg(text: str) -> List[str]:
    """A persona given on the command line: sentences separated by `|` or newlines, with or
    without `your persona: ` in front, or a Python list literal as in personas_train.txt."""
    text = (text or "").strip()
    if text.startswith("["):
        try:
            sentences = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise TransfertransfoError(f"persona {text[:60]!r}: not a valid Python list of sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise TransfertransfoError(f"persona {text[:60]!r}: expected a list of sentences")
    else:
        sentences = text.replace("\n", "|").split("|")
    persona = []
    for sentence in sentences:
        sentence = sentence.strip()
        if sentence.startswith(YOUR_PERSONA.strip()):
            sentence = sentence[len(YOUR_PERSONA.strip()):].strip()
        if sentence:
            persona.append(sentence)
    if not persona:
        raise TransfertransfoError(
            "empty persona: give sentences separated by '|', e.g. 'i love cats.|i am a nurse.'"
        )
    return persona


def persona_text(persona: List[str]) -> str:
    """The persona as the first message of a `-t convai2` episode carries it."""
    return "\n".join(YOUR_PERSONA + sentence for sentence in persona)
