"""OpenAI's completions requests, and what they mean here.

A `system` (or `developer`) message is the bot's persona, one sentence per line or per
`.`; `user` and `assistant` messages are the history; the bot answers the last `user`
message. Decoding follows OpenAI's fields, the model's own options filling what a
request leaves out (its nucleus sampling, top-p 0.9, temperature 0.7, 20 tokens);
`temperature: 0` (or below 1e-5, as vLLM) is greedy. Like vLLM, a few fields beyond
OpenAI's are accepted: `top_k`, `min_tokens`, `beam_size`, `inference` (greedy, nucleus,
topk, beam) and `return_tokens_as_token_ids`. Types are strict (validation.py).
"""
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from parlai_transfertransfo.serving.decoding import Decoding
from parlai_transfertransfo.serving.dialogue import SILENCE, persona_sentences
from parlai_transfertransfo.serving.errors import APIError
from parlai_transfertransfo.serving.validation import (
    MAX_STOP, MAX_STOP_CHARS, MAX_TOP_LOGPROBS, MIN_TEMPERATURE, Finite, Text,
)

STRICT = ConfigDict(strict=True, extra="ignore")  # fields OpenAI has and we do not: ignored


class ContentPart(BaseModel):
    model_config = STRICT
    type: Text
    text: Text | None = None


class Message(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[ContentPart] | None = None
    name: Text | None = None


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool | None = False


class Sampling(BaseModel):
    """The fields chat completions and completions share."""

    model_config = STRICT

    model: Text
    temperature: Finite | None = Field(None, ge=0, le=2)
    top_p: Finite | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(1, ge=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: Text | list[Text] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # beyond OpenAI, as vLLM
    top_k: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0)
    beam_size: int | None = Field(None, ge=1, le=16)
    inference: Literal["greedy", "nucleus", "topk", "beam"] | None = None
    return_tokens_as_token_ids: bool | None = False


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class CompletionRequest(Sampling):
    """`prompt`: the dialogue as ParlAI's text, one utterance a line, the user's last
    (`your persona:` lines are the bot's persona); `system`, beyond OpenAI: the persona."""

    prompt: Text | list[Text]
    system: Text | None = None
    logprobs: int | None = Field(None, ge=0, le=5)  # the legacy API's: top tokens per step
    echo: bool | None = False
    suffix: Text | None = None


@dataclass(frozen=True)
class Limits:
    max_message_chars: int = 4000
    max_messages: int = 256
    max_tokens: int = 256
    max_rows: int = 32


def message_text(message, i):
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise APIError(400, f"messages.{i}.content.{j}: only text parts are supported", f"messages.{i}.content.{j}")
        texts.append(part.text)
    return "".join(texts)


def _too_long(text, field, limits):
    if len(text) > limits.max_message_chars:
        raise APIError(400, f"{field}: {len(text)} characters; this server takes at most "
                       f"{limits.max_message_chars} (--max-message-chars)", field)


def dialogue(messages, limits: Limits):
    """(persona sentences or None, utterances) from OpenAI messages.

    Consecutive messages of one speaker are one utterance; a history that starts with
    the assistant gets ConvAI2's `__SILENCE__` as the user's first turn."""
    if len(messages) > limits.max_messages:
        raise APIError(400, f"messages: {len(messages)} messages; this server takes at most "
                       f"{limits.max_messages}", "messages")
    persona, utterances, last = [], [], None
    for i, message in enumerate(messages):
        text = message_text(message, i)
        _too_long(text, f"messages.{i}.content", limits)
        if message.role in ("system", "developer"):
            persona.append(text)
            continue
        speaker = message.role
        if speaker == last:
            utterances[-1] = f"{utterances[-1]} {text}".strip()
        else:
            if not utterances and speaker == "assistant":
                utterances.append(SILENCE)
            utterances.append(text)
        last = speaker
    if last != "user":
        raise APIError(400, "messages: the last message must be the user's (role 'user'): the bot "
                       "answers it", "messages")
    return (persona_sentences("\n".join(persona)) or None), utterances


def prompt_dialogue(req: CompletionRequest, limits: Limits):
    """(persona sentences or None, utterances) from a completions request's prompt."""
    if req.echo:
        raise APIError(400, "echo: not supported: the prompt is a dialogue, not text to continue", "echo")
    if req.suffix:
        raise APIError(400, "suffix: not supported", "suffix")
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise APIError(400, f"prompt: {len(prompt)} prompts; this server takes one a request", "prompt")
        prompt = prompt[0]
    _too_long(prompt, "prompt", limits)
    _too_long(req.system or "", "system", limits)
    persona, utterances = [], []
    for line in prompt.splitlines():
        if line.strip().lower().startswith("your persona:"):
            persona.append(line)
        elif line.strip():
            utterances.append(line.strip())
    if not utterances:
        raise APIError(400, "prompt: no utterance to answer (one a line, the user's last)", "prompt")
    if len(utterances) > limits.max_messages:
        raise APIError(400, f"prompt: {len(utterances)} utterances; this server takes at most "
                       f"{limits.max_messages}", "prompt")
    return (persona_sentences("\n".join([req.system or ""] + persona)) or None), utterances


def decoding(req: Sampling, defaults: Decoding, limits: Limits, vocab_size: int, logprobs=None) -> Decoding:
    """The request's Decoding, or a 400 naming the field the sampler could not honour."""
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or defaults.max_tokens
    field = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"{field}: {max_tokens}; this server generates at most {limits.max_tokens} "
                       "tokens a reply (--max-tokens-limit)", field)
    greedy_temperature = req.temperature is not None and req.temperature < MIN_TEMPERATURE
    inference = req.inference
    if inference is None:
        if greedy_temperature:
            inference = "greedy"
        elif req.top_k is not None:
            inference = "topk"
        elif req.temperature is not None or req.top_p is not None:
            inference = "nucleus"
        else:
            inference = defaults.inference
    if greedy_temperature and inference != "greedy":
        raise APIError(400, f"temperature: {req.temperature:g} means greedy decoding (any temperature below "
                       f"{MIN_TEMPERATURE:g}, as 0); {inference} needs at least {MIN_TEMPERATURE:g}", "temperature")
    if req.top_k is not None and req.top_k > vocab_size:
        raise APIError(400, f"top_k: {req.top_k} is more than the model's vocabulary ({vocab_size} tokens)", "top_k")
    stop = _stop(req.stop)
    min_tokens = defaults.min_tokens if req.min_tokens is None else req.min_tokens
    if min_tokens > max_tokens:
        raise APIError(400, f"min_tokens: {min_tokens} is more than {field} ({max_tokens})", "min_tokens")
    d = defaults.replace(
        inference=inference,
        temperature=defaults.temperature if greedy_temperature or req.temperature is None else req.temperature,
        top_p=req.top_p if req.top_p is not None else defaults.top_p,
        top_k=req.top_k if req.top_k is not None else defaults.top_k,
        beam_size=req.beam_size if req.beam_size is not None else defaults.beam_size,
        min_tokens=min_tokens, max_tokens=max_tokens, n=req.n or 1, seed=req.seed, stop=stop, logprobs=logprobs,
    )
    if d.rows > limits.max_rows:
        raise APIError(400, f"n: {d.n} choice(s) x {d.rows_per_choice} beam(s) = {d.rows} rows; this "
                       f"server batches at most {limits.max_rows} (--max-batch-rows)", "n")
    if logprobs is not None and d.rows_per_choice > 1:
        raise APIError(400, f"logprobs: not with {d.rows_per_choice} beams a choice (beam_size): a beam's "
                       "tokens are known only when it ends", "logprobs")
    return d


def chat_logprobs(req: ChatCompletionRequest):
    """Decoding.logprobs for a chat request: None, or how many top tokens to list."""
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
    return (req.top_logprobs or 0) if req.logprobs else None


def _stop(stop):
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP:
        raise APIError(400, f"stop: {len(stops)} strings; at most {MAX_STOP}", "stop")
    for i, s in enumerate(stops):
        name = "stop" if isinstance(stop, str) else f"stop.{i}"
        if not s or len(s) > MAX_STOP_CHARS:
            raise APIError(400, f"{name}: {len(s)} characters; a stop string has 1 to {MAX_STOP_CHARS}", name)
    return tuple(stops)
