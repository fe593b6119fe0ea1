"""Decoding settings, and one reply being decoded: ParlAI's own tree search, streamed.

Each choice of a request keeps the search object the agent's `_generate` would build
(GreedySearch, BeamSearch, TopKSampling, NucleusSampling: nucleus.py's) and is advanced with the same
log-probabilities, step for step, so it picks the same tokens. Only the model call is
shared with other requests (scheduler.py).
"""
from dataclasses import dataclass, field, replace

import torch
from parlai.core.torch_generator_agent import BeamSearch, GreedySearch, TopKSampling

from parlai_transfertransfo.agent.nucleus import TopKNucleusSampling

INFERENCE = ("greedy", "nucleus", "topk", "beam")
# Nucleus sampling keeps the tokens whose exclusive cumulative mass is below p: any p at
# most the top token's probability (>= 1/vocabulary) keeps that token alone. ParlAI compares
# in float32, where a p under ~1e-45 becomes 0 and masks every token (a NaN draw); any p
# below this one is computed as this one, which keeps the same single token.
MIN_TOP_P = 1e-8


@dataclass(frozen=True)
class Decoding:
    """How to decode one request; the model's own options give the defaults."""

    inference: str = "nucleus"
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 10
    beam_size: int = 1
    min_tokens: int = 1  # ParlAI's --beam-min-length (greedy ignores it, as in ParlAI)
    max_tokens: int = 20  # ParlAI's --label-truncate
    n: int = 1
    seed: int | None = None
    stop: tuple = ()
    logprobs: int | None = None  # None: none; k: each token's logprob and the top k

    @property
    def rows_per_choice(self) -> int:
        return 1 if self.inference == "greedy" else self.beam_size

    @property
    def rows(self) -> int:
        """Batch rows the request occupies while it decodes."""
        return self.n * self.rows_per_choice

    def replace(self, **changes) -> "Decoding":
        return replace(self, **changes)


def defaults_from_opt(opt) -> Decoding:
    """The agent's decoding options (from its model file and command line)."""
    inference = opt.get("inference") or "greedy"
    return Decoding(
        inference=inference if inference in INFERENCE else "nucleus",
        temperature=float(opt.get("temperature", 1.0)),
        top_p=float(opt.get("topp", 0.9)),
        top_k=int(opt.get("topk", 10)),
        beam_size=max(1, int(opt.get("beam_size", 1))),
        min_tokens=int(opt.get("beam_min_length", 1)),
        max_tokens=int(opt.get("label_truncate") or 20),
    )


def make_search(agent, decoding: Decoding, device, block_context=()):
    """The TreeSearch the agent's `_treesearch_factory` builds, for these settings."""
    common = dict(
        block_ngram=agent.beam_block_ngram,
        context_block_ngram=agent.beam_context_block_ngram,
        length_penalty=agent.opt.get("beam_length_penalty", 0.65),
        padding_token=agent.NULL_IDX,
        bos_token=agent.START_IDX,
        eos_token=agent.END_IDX,
        device=device,
        gpu_beam_blocking=agent.opt.get("gpu_beam_blocking", False),
    )
    d = decoding
    if d.inference == "greedy":
        search = GreedySearch(1, min_length=0, **common)
    elif d.inference == "beam":
        search = BeamSearch(d.beam_size, min_length=d.min_tokens, **common)
    elif d.inference == "topk":
        search = TopKSampling(d.top_k, d.beam_size, min_length=d.min_tokens, **common)
    elif d.inference == "nucleus":
        search = TopKNucleusSampling(max(d.top_p, MIN_TOP_P), d.beam_size, min_length=d.min_tokens, **common)
    else:
        raise ValueError(f"inference must be one of {', '.join(INFERENCE)}, not {d.inference!r}")
    search.set_context(torch.as_tensor(list(block_context), dtype=torch.long))
    return search.set_block_list(agent.beam_block_list)


@dataclass
class Choice:
    """One reply of a request (OpenAI's `choices[index]`) and its rows in the batch.

    With one row per choice (greedy and sampling) every picked token is final, so text
    streams as it comes; beam search streams its best hypothesis when it ends. `max_ts`
    is the agent's: the reply's tokens plus one step whose token becomes `<eos>` if the
    reply did not end by itself.
    """

    index: int
    search: object
    rows: int
    max_ts: int
    reply_type: int
    temperature: float
    stop: tuple
    decode: object  # token ids -> text, the agent's _v2t
    eos: int
    job: object = None  # the scheduler's Job this choice belongs to
    logprobs: int | None = None  # as Decoding.logprobs (one row per choice)
    step: int = 0
    offset: int = 0  # first row in the batch, kept up to date by the scheduler
    tokens: list = field(default_factory=list)
    sent: str = ""
    text: str | None = None
    finish_reason: str | None = None
    token_logprobs: list = field(default_factory=list)  # (token, logprob, [(token, logprob)] top)
    sent_logprobs: int = 0  # how many of them went out with a delta

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def advance(self, logprobs) -> str:
        """One step of the search on this choice's log-probabilities [rows, V]; returns
        the text that became final (may be empty)."""
        self.search.advance(logprobs, self.step)
        self.step += 1
        if self.rows == 1:
            token = int(self.search.outputs[-1][0])
            if token != self.eos and self.step < self.max_ts:
                self.tokens.append(token)
                text = self.decode(self.tokens)
                cut = _stop_at(text, self.stop)
                if cut is not None:
                    return self._finish(text[:cut], "stop")
        if self.search.is_done() or self.step >= self.max_ts:
            return self._finish_search()
        return self._delta(self.decode(self.tokens)) if self.rows == 1 else ""

    def cancel(self):
        self.finish_reason = self.finish_reason or "cancelled"

    def record_logprobs(self, logprobs):
        """The last token's log-probability under `logprobs` [V], and the top k there."""
        token = self.tokens[-1]
        top = []
        if self.logprobs:
            values, ids = logprobs.topk(self.logprobs)
            top = list(zip(ids.tolist(), values.tolist()))
        self.token_logprobs.append((token, float(logprobs[token]), top))

    def unsent_logprobs(self):
        """The recorded logprobs not yet sent, now marked sent."""
        unsent = self.token_logprobs[self.sent_logprobs:]
        self.sent_logprobs = len(self.token_logprobs)
        return unsent

    def backtrack(self):
        return self.search.get_backtrack_from_current_step()

    def outputs(self):
        return self.search.get_output_from_current_step()

    def _finish_search(self):
        ended = bool(self.search.finished)  # else ParlAI forces <eos> on the last step
        hypothesis = self.search.get_rescored_finished()[0][0].tolist()
        tokens = hypothesis[1:-1]  # the decoder's start token ... <eos>
        self.tokens = tokens
        text = self.decode(tokens)
        cut = _stop_at(text, self.stop)
        if cut is not None:
            return self._finish(text[:cut], "stop")
        return self._finish(text, "stop" if ended else "length")

    def _finish(self, text, reason):
        self.text, self.finish_reason = text, reason
        delta = text[len(self.sent):] if text.startswith(self.sent) else ""
        self.sent = text
        return delta

    def _delta(self, text):
        """The new part of `text` that is safe to send: not an incomplete character, nor
        what could still become a stop sequence."""
        safe = len(text.rstrip("\ufffd"))
        hold = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, safe), hold, -1):
                if text[safe - k:safe] == stop[:k]:
                    hold = k
                    break
        text = text[:safe - hold]
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


def _stop_at(text, stops):
    """Index of the earliest stop sequence in text, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None
