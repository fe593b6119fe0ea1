"""OpenAI's chat-completions request and response shapes, and what they mean here.

A `system` (or `developer`) message is the bot's persona, one sentence per line or per
`.`; `user` and `assistant` messages are the history; the bot answers the last `user`
message. Decoding follows OpenAI's fields, the model's own options filling what a
request leaves out (its nucleus sampling, top-p 0.9, temperature 0.7, 20 tokens);
`temperature: 0` is greedy. Like vLLM, a few fields beyond OpenAI's are accepted:
`top_k`, `min_tokens`, `beam_size` and `inference` (greedy, nucleus, topk, beam).
"""
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from parlai_transfertransfo.serving.decoding import Decoding
from parlai_transfertransfo.serving.dialogue import SILENCE, persona_sentences
from parlai_transfertransfo.serving.errors import APIError

MAX_STOP = 4  # OpenAI's limit


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # beyond OpenAI, as vLLM
    top_k: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0)
    beam_size: int | None = Field(None, ge=1, le=16)
    inference: Literal["greedy", "nucleus", "topk", "beam"] | None = None


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
            raise APIError(400, f"messages.{i}.content.{j}: only text parts are supported", f"messages.{i}.content")
        texts.append(part.text)
    return "".join(texts)


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
        if len(text) > limits.max_message_chars:
            raise APIError(400, f"messages.{i}.content: {len(text)} characters; this server takes at most "
                           f"{limits.max_message_chars} (--max-message-chars)", f"messages.{i}.content")
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


def decoding(req: ChatCompletionRequest, defaults: Decoding, limits: Limits) -> Decoding:
    max_tokens = req.max_completion_tokens or req.max_tokens or defaults.max_tokens
    field = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"{field}: {max_tokens}; this server generates at most {limits.max_tokens} "
                       "tokens a reply (--max-tokens-limit)", field)
    inference = req.inference
    if inference is None:
        if req.temperature == 0:
            inference = "greedy"
        elif req.top_k is not None:
            inference = "topk"
        elif req.temperature is not None or req.top_p is not None:
            inference = "nucleus"
        else:
            inference = defaults.inference
    if req.temperature == 0 and inference != "greedy":
        raise APIError(400, f"temperature: 0 means greedy decoding; {inference} needs a temperature > 0",
                       "temperature")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise APIError(400, f"stop: at most {MAX_STOP} non-empty strings", "stop")
    min_tokens = defaults.min_tokens if req.min_tokens is None else req.min_tokens
    if min_tokens > max_tokens:
        raise APIError(400, f"min_tokens: {min_tokens} is more than max_tokens ({max_tokens})", "min_tokens")
    d = defaults.replace(
        inference=inference,
        temperature=req.temperature or defaults.temperature,
        top_p=req.top_p if req.top_p is not None else defaults.top_p,
        top_k=req.top_k if req.top_k is not None else defaults.top_k,
        beam_size=req.beam_size if req.beam_size is not None else defaults.beam_size,
        min_tokens=min_tokens, max_tokens=max_tokens, n=req.n, seed=req.seed, stop=tuple(stop),
    )
    if d.rows > limits.max_rows:
        raise APIError(400, f"n: {d.n} choice(s) x {d.rows_per_choice} beam(s) = {d.rows} rows; this "
                       f"server batches at most {limits.max_rows} (--max-batch-rows)", "n")
    return d


def completion_id():
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(cid, model, choices, prompt_tokens, completion_tokens, notes):
    body = {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c["text"]},
             "finish_reason": c["finish_reason"], "logprobs": None}
            for i, c in sorted(choices.items())
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }
    if notes:
        body["notes"] = notes  # what truncation dropped from the context
    return body


def chunk(cid, model, created, choices=(), usage_=None, notes=None):
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "choices": list(choices)}
    if usage_ is not None:
        body["usage"] = usage_
    if notes:
        body["notes"] = notes
    return body


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
