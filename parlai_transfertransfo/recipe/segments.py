"""The TransferTransfo recipe's input segments, as pure functions over token-id lists.

Follows Hugging Face's transfer-learning-conv-ai `train.py` (`build_input_from_segments`)
token for token, so a model fine-tuned here sees exactly what the original saw:

    <bos> persona...  <speakerX> utterance ... <speaker1> reply <eos>

No torch, no tokenizer: callers tokenize each persona sentence and each utterance on its
own, exactly as written, and pass lists of ids.
"""
from dataclasses import dataclass
from itertools import chain

SPECIAL_TOKENS = ["<bos>", "<eos>", "<speaker1>", "<speaker2>", "<pad>"]
ATTR_TO_SPECIAL_TOKEN = {
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "additional_special_tokens": ["<speaker1>", "<speaker2>"],
}

YOUR_PERSONA = "your persona: "
PARTNER_PERSONA = "partner's persona: "
IGNORE_INDEX = -100  # what torch's cross entropy skips (the recipe's old code used -1)


@dataclass(frozen=True)
class SpecialIds:
    """The ids of SPECIAL_TOKENS in one tokenizer."""

    bos: int
    eos: int
    speaker1: int
    speaker2: int
    pad: int


def split_persona(text):
    """Split the first text of a ConvAI2 episode into (persona, partner_persona, utterances).

    ParlAI's `convai2` teacher packs the persona into the first message, one
    `your persona: ...` line per sentence, followed by the partner's first utterance.
    """
    persona, partner_persona, utterances = [], [], []
    for line in text.split("\n"):
        if line.startswith(YOUR_PERSONA):
            persona.append(line[len(YOUR_PERSONA):])
        elif line.startswith(PARTNER_PERSONA):
            partner_persona.append(line[len(PARTNER_PERSONA):])
        else:
            utterances.append(line)
    return persona, partner_persona, utterances


def recent_history(history, max_history):
    """The recipe's window: the last `max_history` exchanges plus the partner's last turn."""
    return list(history[-(2 * max_history + 1):])


def rotate_persona(persona, times):
    """The recipe's `--personality_permutations`: move the last sentence first, `times` times."""
    persona = list(persona)
    for _ in range(times):
        persona = [persona[-1]] + persona[:-1] if persona else persona
    return persona


def distractors(label, candidates, n):
    """The last `n` candidates other than the gold label, in order.

    The recipe takes `candidates[-num_candidates:]` with the gold reply last, so its
    distractors are the candidates just before it in ConvAI2's lists.
    """
    if n <= 0:
        return []
    return [c for c in candidates if c != label][-n:]


def _sequence(persona, history, reply, ids):
    """Segments with their speaker tokens, and each segment's token type.

    Speaker tokens count back from the reply (always `<speaker1>`); token types count
    forward from the persona (always `<speaker1>`).  The two disagree whenever the
    history has even length: that is the recipe, kept as is.
    """
    sequence = [[ids.bos] + list(chain(*persona))] + [list(h) for h in history] + [list(reply)]
    n = len(sequence)
    sequence = [sequence[0]] + [
        [ids.speaker2 if (n - i) % 2 else ids.speaker1] + s for i, s in enumerate(sequence[1:])
    ]
    types = [ids.speaker2 if i % 2 else ids.speaker1 for i in range(n)]
    return sequence, types


def build_instance(persona, history, reply, ids, lm_labels=True, with_eos=True):
    """One training/ranking instance: input_ids, token_type_ids, mc_token_ids, lm_labels.

    lm_labels are unshifted (the model shifts them): IGNORE_INDEX everywhere except the
    reply's tokens and its `<eos>`; all IGNORE_INDEX for a distractor (`lm_labels=False`).
    """
    reply = list(reply) + ([ids.eos] if with_eos else [])
    sequence, types = _sequence(persona, history, reply, ids)
    input_ids = list(chain(*sequence))
    labels = [IGNORE_INDEX] * len(input_ids)
    if lm_labels:
        labels = [IGNORE_INDEX] * (len(input_ids) - len(reply)) + reply
    return {
        "input_ids": input_ids,
        "token_type_ids": [t for t, s in zip(types, sequence) for _ in s],
        "mc_token_ids": len(input_ids) - 1,
        "lm_labels": labels,
    }


def build_prefix(persona, history, ids):
    """The context a decoder starts from: (input_ids, token_type_ids, reply_type).

    Stops before the reply's `<speaker1>`, which the decoder feeds as its first input
    with token type `reply_type`, the type the reply segment gets in `build_instance`.
    """
    sequence, types = _sequence(persona, history, [], ids)
    input_ids = list(chain(*sequence[:-1]))
    token_type_ids = [t for t, s in zip(types[:-1], sequence[:-1]) for _ in s]
    return input_ids, token_type_ids, types[-1]


def instance_length(persona, history, reply):
    """Length of `build_instance(...)` with `<eos>`, without building it."""
    return 1 + sum(map(len, persona)) + sum(len(h) + 1 for h in history) + len(reply) + 2


def truncate(persona, history, reply, max_len):
    """Fit an instance (with `<eos>`) into `max_len` tokens: (persona, history, reply, notes).

    Drops the oldest history utterances first, by exchange (two at a time) down to the
    last utterance, then persona sentences from the end; the reply and its `<eos>` stay.
    Only if one utterance or the reply alone is still too long are tokens cut: the
    history utterance keeps its most recent tokens, the reply its first ones.  `notes`
    describes any persona or token loss, for the caller to log; dropping old history is
    the recipe's normal window and is not noted.  Never raises for long data.
    """
    if max_len < 3:
        raise ValueError(f"max_len={max_len} cannot hold even <bos> <speaker1> <eos>")
    persona, history, reply = [list(p) for p in persona], [list(h) for h in history], list(reply)
    notes = []
    while len(history) > 1 and instance_length(persona, history, reply) > max_len:
        # Whole exchanges, so the reply keeps its token type (see `_sequence`).
        del history[: 2 if len(history) > 2 else 1]
    dropped = 0
    while persona and instance_length(persona, history, reply) > max_len:
        persona.pop()
        dropped += 1
    if dropped:
        notes.append(f"dropped {dropped} persona sentence(s) to fit {max_len} tokens")
    if instance_length(persona, history, reply) <= max_len:
        return persona, history, reply, notes

    # One history utterance (or none) and the reply: they share the room left.
    if history and max_len < 5:  # no room for even one token of it: drop it whole
        history = []
        notes.append(f"dropped the history to fit {max_len} tokens")
    room = max_len - instance_length([], [[] for _ in history], [])
    utterance = history[0] if history else []
    if len(reply) + len(utterance) > room:
        # The reply keeps what the utterance leaves, and at least half the room.
        keep = min(len(reply), max(room - len(utterance), (room + 1) // 2))
        if keep < len(reply):
            notes.append(f"cut the reply from {len(reply)} to {keep} tokens to fit {max_len}")
            reply = reply[:keep]
        keep = room - len(reply)
        if history and keep <= 0:
            history = []
            notes.append(f"dropped the history to fit {max_len} tokens")
        elif history and keep < len(utterance):
            notes.append(
                f"cut a history utterance from {len(utterance)} to its last {keep} tokens "
                f"to fit {max_len}"
            )
            history = [utterance[-keep:]]
    return persona, history, reply, notes
