"""Persona and history as the recipe's context, built exactly as the agent builds it; and
the dialogue seen from the user's side, from which the model writes suggestions.

Runs in the scheduler's thread: the tokenizer is used by one thread only.
"""
import re
from dataclasses import dataclass

from parlai_transfertransfo.agent import instances
from parlai_transfertransfo.recipe import segments

# ConvAI2's partner turn when the other side speaks first: the data's own convention.
SILENCE = "__SILENCE__"
YOUR_PERSONA = re.compile(r"^\s*your persona:\s*", re.IGNORECASE)


def persona_sentences(text):
    """A persona written as text (a `system` message, the page's box): one sentence per
    line or `|`, lines split after `.`, `!` or `?`; `your persona:` prefixes dropped."""
    sentences = []
    for line in re.split(r"[\n|]+", text or ""):
        line = YOUR_PERSONA.sub("", line).strip()
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
    return sentences


def user_side(utterances):
    """The dialogue as the user lived it, for the model to speak as the user: the user
    spoke first, so their partner's first turn was silence (as ConvAI2 writes it). The
    recipe gives the reply `<speaker1>` and counts speakers back from it, so the bot's
    turns become the partner's (`<speaker2>`) and the user's the model's own."""
    return [SILENCE] + list(utterances)


@dataclass
class Context:
    ids: list  # <bos> persona ... <speakerX> utterance ..., before the reply's <speaker1>
    types: list
    reply_type: int
    notes: list  # what truncation dropped, for the client
    dialogue_ids: list  # the whole dialogue, untruncated: what context blocking reads


def build_context(agent, persona, utterances, reply_tokens, max_context_tokens=0):
    """The agent's `_set_text_vec` for a chat message: the recipe's history window
    (--max-history), then `segments.truncate` to the model's positions with room for the
    reply, as in `instances.context_segments`. The reply's room is at most a quarter of the positions, so
    a large `max_tokens` never pushes the persona out; `max_context_tokens` (0: none)
    bounds the context as --text-truncate does."""
    tokenize = agent.dict.txt2vec
    persona_vecs = [tokenize(s) for s in persona]
    utterance_vecs = [tokenize(u) for u in utterances]
    budget = min(reply_tokens, max(1, agent.max_positions // 4)) + 1
    limit = instances.instance_limit(agent, budget)
    if max_context_tokens:
        limit = min(limit, max_context_tokens + budget + 2)
    recent = segments.recent_history(utterance_vecs, agent.opt["max_history"])
    kept_persona, history, _, notes = segments.truncate(persona_vecs, recent, [0] * budget, limit)
    notes = [n for n in notes if not n.startswith("cut the reply")]  # a placeholder reply
    ids, types, reply_type = segments.build_prefix(kept_persona, history, agent.special)
    dialogue_ids = [t for vec in persona_vecs + utterance_vecs for t in vec]
    return Context(ids, types, reply_type, notes, dialogue_ids)
