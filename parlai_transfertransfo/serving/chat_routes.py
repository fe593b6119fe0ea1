"""The chat page's API: one session per browser tab, under /api/sessions/{id}.

    POST   /api/sessions                     a new session (the bot's persona, a random user persona)
    GET    /api/sessions/{id}                its state
    PATCH  /api/sessions/{id}                edit personas or decoding settings
    POST   /api/sessions/{id}/messages       send a message: the reply streams (SSE)
    POST   /api/sessions/{id}/suggestions    replies the model writes for the user
    POST   /api/sessions/{id}/new-persona    a random training persona, a new conversation
    POST   /api/sessions/{id}/user-persona   a random persona for the user
    POST   /api/sessions/{id}/undo           remove the last exchange
    POST   /api/sessions/{id}/reset          clear the conversation

Creating a session is limited per client address (--session-rate-limit, 429 past it) and
never pushes out a session in use (503 when every place is taken: sessions.py). Bodies are
strictly typed, as the OpenAI API's: a setting the sampler cannot honour is a 400 naming
it, before it is stored.
"""
import asyncio
import contextlib
import json
import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from parlai_transfertransfo.serving import dialogue
from parlai_transfertransfo.serving.errors import APIError
from parlai_transfertransfo.serving.job_io import SSE_HEADERS, cancel_on_disconnect, submit
from parlai_transfertransfo.serving.rate_limit import retry_after
from parlai_transfertransfo.serving.sessions import SessionsFull
from parlai_transfertransfo.serving.validation import MIN_TEMPERATURE, Finite, Text

router = APIRouter(prefix="/api/sessions")
STRICT = ConfigDict(strict=True)


class Settings(BaseModel):
    model_config = STRICT
    inference: Literal["greedy", "nucleus", "topk", "beam"] | None = None
    temperature: Finite | None = Field(None, ge=MIN_TEMPERATURE, le=2)
    top_p: Finite | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=1000)
    beam_size: int | None = Field(None, ge=1, le=16)
    max_tokens: int | None = Field(None, ge=1)
    suggestions: int | None = Field(None, ge=0, le=5)


class SessionEdit(BaseModel):
    model_config = STRICT
    persona: Text | None = Field(None, description="the bot's persona, one sentence per line")
    user_persona: Text | None = Field(None, description="the user's persona ('' for none)")
    settings: Settings | None = None


class Say(BaseModel):
    model_config = STRICT
    text: Text


def page_settings(config):
    d = config.defaults
    return {"inference": d.inference, "temperature": d.temperature, "top_p": d.top_p, "top_k": d.top_k,
            "beam_size": d.beam_size, "max_tokens": d.max_tokens, "suggestions": config.suggestions}


def _session(request, session_id):
    session = request.app.state.sessions.get(session_id)
    if session is None:
        raise APIError(404, "no such session (it may have expired): start a new one", "session")
    return session


def _persona(text, config, field):
    if len(text) > config.limits.max_message_chars:
        raise APIError(400, f"{field}: {len(text)} characters; this server takes at most "
                       f"{config.limits.max_message_chars} (--max-message-chars)", field)
    return dialogue.persona_sentences(text)


def _decoding(session, config, **changes):
    s = session.settings
    d = config.defaults.replace(
        inference=s["inference"], temperature=s["temperature"], top_p=s["top_p"], top_k=s["top_k"],
        beam_size=s["beam_size"], max_tokens=s["max_tokens"],
    )
    d = d.replace(**changes)
    if d.rows > config.limits.max_rows:
        raise APIError(400, f"settings.beam_size: {d.rows} batch rows; this server batches at most "
                       f"{config.limits.max_rows} (--max-batch-rows)", "settings.beam_size")
    return d


@router.post("")
async def create(request: Request):
    state = request.app.state
    config = state.config
    address = request.client.host if request.client else "unknown"
    wait = state.session_rate.take(address)
    if wait:
        raise APIError(429, f"too many new sessions from {address}: at most {state.session_rate.per_minute} a "
                       "minute (--session-rate-limit); try again shortly", code="rate_limit_exceeded",
                       headers={"Retry-After": retry_after(wait)})
    try:
        session = state.sessions.create(config.new_persona(), config.random_persona(), page_settings(config))
    except SessionsFull as full:
        raise APIError(503, str(full), headers={"Retry-After": retry_after(full.retry_after)})
    return session.public()


@router.get("/{session_id}")
async def read(session_id: str, request: Request):
    return _session(request, session_id).public()


@router.patch("/{session_id}")
async def edit(session_id: str, body: SessionEdit, request: Request):
    """Every change is checked before any is stored: a refused edit changes nothing."""
    state = request.app.state
    config = state.config
    session = _session(request, session_id)
    changes = {}
    if body.persona is not None:
        changes["persona"] = _persona(body.persona, config, "persona")
        if not changes["persona"]:
            raise APIError(400, "persona: give the bot at least one sentence", "persona")
    if body.user_persona is not None:
        changes["user_persona"] = _persona(body.user_persona, config, "user_persona")
    settings = body.settings.model_dump(exclude_none=True) if body.settings is not None else {}
    if settings.get("max_tokens", 0) > config.limits.max_tokens:
        raise APIError(400, f"settings.max_tokens: at most {config.limits.max_tokens} "
                       "(--max-tokens-limit)", "settings.max_tokens")
    if settings.get("top_k", 0) > state.scheduler.vocab_size:
        raise APIError(400, f"settings.top_k: {settings['top_k']} is more than the model's vocabulary "
                       f"({state.scheduler.vocab_size} tokens)", "settings.top_k")
    for name, value in changes.items():
        setattr(session, name, value)
    session.settings.update(settings)
    return session.public()


@router.post("/{session_id}/new-persona")
async def new_persona(session_id: str, request: Request):
    session = _session(request, session_id)
    session.persona = request.app.state.config.random_persona()
    session.history, session.notes = [], []
    return session.public()


@router.post("/{session_id}/user-persona")
async def new_user_persona(session_id: str, request: Request):
    session = _session(request, session_id)
    session.user_persona = request.app.state.config.random_persona()
    return session.public()


@router.post("/{session_id}/undo")
async def undo(session_id: str, request: Request):
    session = _session(request, session_id)
    session.undo()
    return session.public()


@router.post("/{session_id}/reset")
async def reset(session_id: str, request: Request):
    session = _session(request, session_id)
    session.history, session.notes = [], []
    return session.public()


@router.post("/{session_id}/messages")
async def say(session_id: str, body: Say, request: Request):
    """The bot's reply, streamed as server-sent events: `start`, `token`..., then `reply`
    (text, latency) or `error`. The exchange joins the session when the reply is done."""
    config = request.app.state.config
    session = _session(request, session_id)
    text = body.text.strip()
    if not text:
        raise APIError(400, "text: the message is empty", "text")
    if len(text) > config.limits.max_message_chars:
        raise APIError(400, f"text: {len(text)} characters; this server takes at most "
                       f"{config.limits.max_message_chars} (--max-message-chars)", "text")
    if session.busy:
        raise APIError(409, "a reply is still being written for this session")
    job = session.job = submit(request, session.persona, session.utterances() + [text], _decoding(session, config))
    return StreamingResponse(_reply_events(job, session, text), media_type="text/event-stream", headers=SSE_HEADERS)


def _event(name, body):
    return f"event: {name}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _reply_events(job, session, text):
    first_token = None
    async with contextlib.aclosing(job.stream()) as events:
        async for event in events:
            kind = event[0]
            if kind == "start":
                session.notes = event[1]["notes"]
                yield _event("start", {"notes": session.notes})
            elif kind == "delta":
                first_token = first_token or time.perf_counter()
                yield _event("token", {"text": event[2]})
            elif kind == "end":
                reply = event[2]
                session.add_exchange(text, reply["text"])
                now = time.perf_counter()
                yield _event("reply", {
                    "text": reply["text"], "tokens": reply["tokens"], "finish_reason": reply["finish_reason"],
                    "latency_ms": round(1000 * (now - job.submitted)),
                    "first_token_ms": round(1000 * ((first_token or now) - job.submitted)),
                })
            elif kind == "error":
                yield _event("error", {"message": event[1]})


@router.post("/{session_id}/suggestions")
async def suggestions(session_id: str, request: Request):
    """Replies for the user to pick: the model speaks as the user (their persona, the
    dialogue from their side), sampled so that they differ."""
    config = request.app.state.config
    session = _session(request, session_id)
    n = session.settings.get("suggestions", config.suggestions)
    if n <= 0:
        return {"suggestions": []}
    d = _decoding(session, config, inference="nucleus", n=n, beam_size=1,
                  temperature=config.defaults.temperature, top_p=config.defaults.top_p)
    job = submit(request, session.user_persona, dialogue.user_side(session.utterances()), d)
    texts = {}
    watcher = asyncio.ensure_future(cancel_on_disconnect(request, job))
    try:
        async with contextlib.aclosing(job.stream()) as events:
            async for event in events:
                if event[0] == "end":
                    texts[event[1]] = event[2]["text"].strip()
                elif event[0] == "error":
                    raise APIError(500, event[1])
    finally:
        watcher.cancel()
    unique = list(dict.fromkeys(t for _, t in sorted(texts.items()) if t))
    return {"suggestions": unique}
