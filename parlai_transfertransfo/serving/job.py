"""One request as the scheduler sees it: a dialogue, its decoding settings, its events.

HTTP handlers create a `Job` on their event loop and read its events; the scheduler's
thread emits them (`start`, `delta`, `end`, then `done`, or `error`) and stamps the job's
times, which /metrics reads.
"""
import asyncio
import contextlib
import time

import torch

OUTCOMES = ("completed", "cancelled", "failed")


class Job:
    """One request: a dialogue to answer, its decoding settings, and where its events go.

    Create it on the event loop that will read `events`; `cancel()` from anywhere.
    """

    def __init__(self, persona, utterances, decoding):
        self.persona, self.utterances, self.decoding = list(persona), list(utterances), decoding
        self.loop = asyncio.get_running_loop()
        self.events = asyncio.Queue()
        self.cancelled = False
        self.ended = False  # set by the scheduler when the job leaves it, however it ends
        self.outcome = None  # then one of OUTCOMES
        self.submitted = time.perf_counter()
        self.first_token = None  # perf_counter() when its first token was chosen
        self.finished = None  # perf_counter() when it left the scheduler
        self.open_choices = decoding.n
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.rng_state = None  # with a seed: torch's RNG state between this job's draws

    def cancel(self):
        self.cancelled = True

    async def stream(self):
        """The job's events up to `done` or `error`. A reader that stops early (its client
        went away: the task is cancelled) cancels the job, freeing its batch rows."""
        finished = False
        try:
            while not finished:
                event = await self.events.get()
                finished = event[0] in ("done", "error")
                yield event
        finally:
            if not finished:
                self.cancel()

    def emit(self, *event):
        """Thread-safe: queue an event for the job's reader (dropped if its loop is gone)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody is reading
            self.cancelled = True


@contextlib.contextmanager
def own_rng(job, device):
    """Sample with the job's own RNG when it has a seed (OpenAI's `seed`): ParlAI's
    samplers draw from torch's global generator, so the job's state is swapped in around
    its draws. Seeded like `torch.manual_seed(seed)` before the agent's `act`."""
    if job.decoding.seed is None:
        yield
        return
    cuda = device.type == "cuda"
    saved = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
    if job.rng_state is None:
        torch.manual_seed(job.decoding.seed)
    else:
        torch.set_rng_state(job.rng_state[0])
        if cuda:
            torch.cuda.set_rng_state(job.rng_state[1], device)
    try:
        yield
    finally:
        job.rng_state = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
        torch.set_rng_state(saved[0])
        if cuda:
            torch.cuda.set_rng_state(saved[1], device)
