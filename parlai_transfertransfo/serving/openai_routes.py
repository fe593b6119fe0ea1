"""`GET /v1/models` and `POST /v1/chat/completions`, streaming or not."""
import asyncio
import contextlib
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from parlai_transfertransfo.serving import openai_schema as schema
from parlai_transfertransfo.serving.errors import APIError, error_body
from parlai_transfertransfo.serving.scheduler import Job, QueueFull

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request):
    config = request.app.state.config
    return {"object": "list", "data": [
        {"id": config.model_id, "object": "model", "created": config.created, "owned_by": "parlai-transfertransfo"}
    ]}


def submit(request: Request, persona, utterances, decoding) -> Job:
    """A job on the app's scheduler; 503 when too many are waiting."""
    job = Job(persona, utterances, decoding)
    try:
        request.app.state.scheduler.submit(job)
    except QueueFull as err:
        raise APIError(503, f"the server is busy: {err}; try again shortly")
    return job


@router.post("/v1/chat/completions")
async def chat_completions(body: schema.ChatCompletionRequest, request: Request):
    config = request.app.state.config
    if body.model != config.model_id:
        raise APIError(404, f"model '{body.model}' does not exist; this server serves '{config.model_id}'",
                       "model", "model_not_found")
    persona, utterances = schema.dialogue(body.messages, config.limits)
    decoding = schema.decoding(body, config.defaults, config.limits)
    job = submit(request, persona or config.default_persona, utterances, decoding)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(job, config.model_id, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _complete(job, request, config.model_id)


async def _complete(job, request, model):
    """Wait for the whole reply; a client that hangs up first cancels it."""
    choices, start = {}, {}
    watcher = asyncio.ensure_future(cancel_on_disconnect(request, job))
    try:
        async with contextlib.aclosing(job.stream()) as events:
            async for event in events:
                kind = event[0]
                if kind == "start":
                    start = event[1]
                elif kind == "end":
                    choices[event[1]] = event[2]
                elif kind == "error":
                    raise APIError(500, event[1])
                elif kind == "done":
                    return schema.completion(schema.completion_id(), model, choices, start["prompt_tokens"],
                                             event[1]["completion_tokens"], start["notes"])
    finally:
        watcher.cancel()


async def cancel_on_disconnect(request, job, every=0.25):
    """Polls the connection of a request whose response is not streaming yet."""
    while not await request.is_disconnected():
        await asyncio.sleep(every)
    job.cancel()
    job.events.put_nowait(("error", "the client disconnected"))


async def _sse(job, model, include_usage):
    cid, created = schema.completion_id(), int(time.time())
    prompt_tokens = 0

    def data(body):
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async with contextlib.aclosing(job.stream()) as events:
        async for event in events:
            kind = event[0]
            if kind == "start":
                prompt_tokens = event[1]["prompt_tokens"]
                first = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None} for i in range(job.decoding.n)]
                yield data(schema.chunk(cid, model, created, first, notes=event[1]["notes"]))
            elif kind == "delta":
                yield data(schema.chunk(cid, model, created, [
                    {"index": event[1], "delta": {"content": event[2]}, "logprobs": None, "finish_reason": None}]))
            elif kind == "end":
                yield data(schema.chunk(cid, model, created, [
                    {"index": event[1], "delta": {}, "logprobs": None, "finish_reason": event[2]["finish_reason"]}]))
            elif kind == "done" and include_usage:
                yield data(schema.chunk(cid, model, created, [],
                                        schema.usage(prompt_tokens, event[1]["completion_tokens"])))
            elif kind == "error":
                yield data(error_body(500, event[1]))
    yield "data: [DONE]\n\n"
