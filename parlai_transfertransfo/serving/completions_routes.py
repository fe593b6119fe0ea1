"""`POST /v1/completions`: OpenAI's (legacy) completions API over the dialogue model.

The prompt is the dialogue as ParlAI writes an observation's text: one utterance a line,
the user's last, `your persona:` lines for the bot's persona (or the `system` field, beyond
OpenAI's); the completion is the bot's reply. `logprobs: k` (0 to 5) gives each token's
logprob and the k likeliest tokens at its step; `echo` is not supported.
"""
import contextlib
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from parlai_transfertransfo.serving import openai_responses as responses
from parlai_transfertransfo.serving import openai_schema as schema
from parlai_transfertransfo.serving.errors import error_body
from parlai_transfertransfo.serving.job_io import SSE_HEADERS, sse_data, submit, whole
from parlai_transfertransfo.serving.openai_routes import check_model, request_decoding

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: schema.CompletionRequest, request: Request):
    config = request.app.state.config
    check_model(request, body.model)
    persona, utterances = schema.prompt_dialogue(body, config.limits)
    job = submit(request, persona or config.default_persona, utterances, request_decoding(request, body, body.logprobs))
    tokens, as_ids = request.app.state.token_text, bool(body.return_tokens_as_token_ids)
    cid, created = responses.completion_id("cmpl"), int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(job, cid, created, config.model_id, include_usage, tokens, as_ids),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    start, ends, done = await whole(job, request)
    choices = []
    for index, end in sorted(ends.items()):
        logprobs = None if end.get("logprobs") is None else tokens.legacy(end["logprobs"], as_ids)[0]
        choices.append({"index": index, "text": end["text"], "logprobs": logprobs,
                        "finish_reason": end["finish_reason"]})
    return responses.text_completion(cid, config.model_id, created, choices,
                                     responses.usage(start["prompt_tokens"], done["completion_tokens"]), start["notes"])


async def _sse(job, cid, created, model, include_usage, tokens, as_ids):
    prompt_tokens, offsets = 0, {}
    wanted = job.decoding.logprobs is not None

    def choice(index, text, entries, finish_reason=None):
        logprobs = None
        if wanted:
            logprobs, offsets[index] = tokens.legacy(entries or [], as_ids, offsets.get(index, 0))
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}

    async with contextlib.aclosing(job.stream()) as events:
        async for event in events:
            kind = event[0]
            if kind == "start":
                prompt_tokens = event[1]["prompt_tokens"]
            elif kind == "delta":
                yield sse_data(responses.text_completion(cid, model, created, [choice(event[1], event[2], event[3])]))
            elif kind == "end":
                end = event[2]
                yield sse_data(responses.text_completion(cid, model, created, [
                    choice(event[1], "", end.get("unsent_logprobs"), end["finish_reason"])]))
            elif kind == "done" and include_usage:
                yield sse_data(responses.text_completion(cid, model, created, [],
                                                         responses.usage(prompt_tokens, event[1]["completion_tokens"])))
            elif kind == "error":
                yield sse_data(error_body(500, event[1]))
    yield "data: [DONE]\n\n"
