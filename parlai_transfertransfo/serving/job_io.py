"""A handler's side of a Job: submit it, wait for the whole reply, notice a client that
hangs up, and write server-sent events."""
import asyncio
import contextlib
import json

from parlai_transfertransfo.serving.errors import APIError
from parlai_transfertransfo.serving.job import Job
from parlai_transfertransfo.serving.scheduler import QueueFull

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def submit(request, persona, utterances, decoding) -> Job:
    """A job on the app's scheduler; 503 when too many are waiting."""
    job = Job(persona, utterances, decoding)
    try:
        request.app.state.scheduler.submit(job)
    except QueueFull as err:
        raise APIError(503, f"the server is busy: {err}; try again shortly")
    return job


async def cancel_on_disconnect(request, job, every=0.25):
    """Polls the connection of a request whose response is not streaming yet."""
    while not await request.is_disconnected():
        await asyncio.sleep(every)
    job.cancel()
    job.events.put_nowait(("error", "the client disconnected"))


async def whole(job, request):
    """(the start event's fields, {choice index: its end event}, the done event's fields);
    a client that hangs up first cancels the job; a failed job is a 500 (one that failed
    in its own rows says `x-should-retry: false`: the `openai` client would resend it)."""
    start, ends = {}, {}
    watcher = asyncio.ensure_future(cancel_on_disconnect(request, job))
    try:
        async with contextlib.aclosing(job.stream()) as events:
            async for event in events:
                kind = event[0]
                if kind == "start":
                    start = event[1]
                elif kind == "end":
                    ends[event[1]] = event[2]
                elif kind == "error":  # the official client retries a 500 unless told not to
                    own = len(event) > 2 and event[2]
                    raise APIError(500, event[1], headers={"x-should-retry": "false"} if own else None)
                elif kind == "done":
                    return start, ends, event[1]
    finally:
        watcher.cancel()


def sse_data(body):
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
