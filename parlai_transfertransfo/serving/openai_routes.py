"""`GET /v1/models` and `POST /v1/chat/completions` (SSE when stream=true, logprobs on request)."""
import contextlib
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from parlai_transfertransfo.serving import openai_responses as responses
from parlai_transfertransfo.serving import openai_schema as schema
from parlai_transfertransfo.serving.errors import APIError, error_body
from parlai_transfertransfo.serving.job_io import SSE_HEADERS, sse_data, submit, whole

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request):
    config = request.app.state.config
    return {"object": "list", "data": [
        {"id": config.model_id, "object": "model", "created": config.created, "owned_by": "parlai-transfertransfo"}
    ]}


def check_model(request, name):
    config = request.app.state.config
    if name != config.model_id:
        raise APIError(404, f"model '{name}' does not exist; this server serves '{config.model_id}'",
                       "model", "model_not_found")


def request_decoding(request, body, logprobs=None):
    config = request.app.state.config
    return schema.decoding(body, config.defaults, config.limits, request.app.state.scheduler.vocab_size, logprobs)


@router.post("/v1/chat/completions")
async def chat_completions(body: schema.ChatCompletionRequest, request: Request):
    config = request.app.state.config
    check_model(request, body.model)
    persona, utterances = schema.dialogue(body.messages, config.limits)
    decoding = request_decoding(request, body, schema.chat_logprobs(body))
    job = submit(request, persona or config.default_persona, utterances, decoding)
    tokens = request.app.state.token_text
    as_ids = bool(body.return_tokens_as_token_ids)

    def logprobs(entries):
        return tokens.chat(entries, as_ids)

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(job, config.model_id, include_usage, logprobs), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    start, ends, done = await whole(job, request)
    return responses.chat_completion(responses.completion_id(), config.model_id, ends, start["prompt_tokens"],
                                     done["completion_tokens"], start["notes"], logprobs)


async def _sse(job, model, include_usage, logprobs):
    cid, created = responses.completion_id(), int(time.time())
    prompt_tokens = 0
    wanted = job.decoding.logprobs is not None

    def choice(index, delta, entries=None, finish_reason=None):
        return {"index": index, "delta": delta, "logprobs": logprobs(entries) if wanted and entries else None,
                "finish_reason": finish_reason}

    async with contextlib.aclosing(job.stream()) as events:
        async for event in events:
            kind = event[0]
            if kind == "start":
                prompt_tokens = event[1]["prompt_tokens"]
                first = [choice(i, {"role": "assistant", "content": ""}) for i in range(job.decoding.n)]
                yield sse_data(responses.chunk(cid, model, created, first, notes=event[1]["notes"]))
            elif kind == "delta":
                yield sse_data(responses.chunk(cid, model, created, [choice(event[1], {"content": event[2]}, event[3])]))
            elif kind == "end":
                end = event[2]
                yield sse_data(responses.chunk(cid, model, created, [
                    choice(event[1], {}, end.get("unsent_logprobs"), end["finish_reason"])]))
            elif kind == "done" and include_usage:
                yield sse_data(responses.chunk(cid, model, created, [],
                                               responses.usage(prompt_tokens, event[1]["completion_tokens"])))
            elif kind == "error":
                yield sse_data(error_body(500, event[1]))
    yield "data: [DONE]\n\n"
