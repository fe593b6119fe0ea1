"""OpenAI's response bodies: chat completions and completions, whole or as stream chunks."""
import time
import uuid


def completion_id(prefix="chatcmpl"):
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _body(cid, kind, model, created, choices, usage_=None, notes=None):
    body = {"id": cid, "object": kind, "created": created, "model": model, "system_fingerprint": None,
            "choices": list(choices)}
    if usage_ is not None:
        body["usage"] = usage_
    if notes:
        body["notes"] = notes  # what truncation dropped from the context
    return body


def chat_completion(cid, model, choices, prompt_tokens, completion_tokens, notes, logprobs=None):
    """choices: {index: the scheduler's end event}; logprobs: entries -> OpenAI's shape."""
    return _body(cid, "chat.completion", model, int(time.time()), [
        {"index": i, "message": {"role": "assistant", "content": c["text"]}, "finish_reason": c["finish_reason"],
         "logprobs": logprobs(c["logprobs"]) if logprobs and c.get("logprobs") is not None else None}
        for i, c in sorted(choices.items())
    ], usage(prompt_tokens, completion_tokens), notes)


def chunk(cid, model, created, choices=(), usage_=None, notes=None):
    return _body(cid, "chat.completion.chunk", model, created, choices, usage_, notes)


def text_completion(cid, model, created, choices, usage_=None, notes=None):
    """The completions API's body, whole or one stream chunk (OpenAI: the same object)."""
    return _body(cid, "text_completion", model, created, choices, usage_, notes)
