"""Dynamic batching: one thread owns the model and decodes every request in flight at once.

Each loop: requests that arrived are admitted (their contexts run through the model in
one prefill call, with `<speaker1>` as the agent's encoder does), then ONE model call
advances every row of every request by a token. Each request keeps its own ParlAI tree
search (decoding.py), sampling RNG and stop rules; rows leave the batch as soon as their
request ends, is cancelled (client gone) or fails, without touching the others.

HTTP handlers talk to it through `Job`: `submit` returns at once, events come back on the
job's asyncio queue (`start`, `delta`, `end`, then `done`, or `error`).
"""
import asyncio
import collections
import contextlib
import logging
import threading
import time

import torch
import torch.nn.functional as F

from parlai_transfertransfo.recipe.prefix import left_pad
from parlai_transfertransfo.serving import dialogue, kv_batch
from parlai_transfertransfo.serving.decoding import Choice, make_search

log = logging.getLogger("transfertransfo.serve")


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""


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
        self.submitted = time.perf_counter()
        self.open_choices = decoding.n
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


class Scheduler:
    """Owns the agent's model in one thread; see the module docstring."""

    def __init__(self, agent, max_rows=32, max_queue=256, max_context_tokens=512, max_prefill_tokens=4096):
        self.agent = agent
        self.model = agent.model.module if hasattr(agent.model, "module") else agent.model
        self.heads = self.model.double_heads
        self.model.eval()  # no dropout: what the agent's eval_step runs
        self.device = next(self.model.parameters()).device
        self.max_rows, self.max_queue = max_rows, max_queue
        self.max_context_tokens, self.max_prefill_tokens = max_context_tokens, max_prefill_tokens
        self.inbox = collections.deque()
        self.cv = threading.Condition()
        self.choices = []  # every running Choice, in batch-row order
        self.running = {}  # id -> every job that has rows in the batch
        self.state = None  # their rows' cached contexts (a Prefix), or None when idle
        self.stats = collections.Counter()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="transfertransfo-scheduler", daemon=True)

    # ------------------------------------------------------------------ outside API
    def start(self):
        self.thread.start()
        return self

    def stop(self):
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        self.thread.join(timeout=10)

    def submit(self, job):
        with self.cv:
            if len(self.inbox) >= self.max_queue:
                raise QueueFull(f"{len(self.inbox)} requests are waiting (--max-queue {self.max_queue})")
            self.inbox.append(job)
            self.stats["requests"] += 1
            self.cv.notify()

    def health(self):
        return {
            "running_requests": len(self.running), "queued_requests": len(self.inbox),
            "batch_rows": sum(c.rows for c in list(self.choices)), **dict(self.stats),
        }

    # ------------------------------------------------------------------ the loop
    def _loop(self):
        while True:
            with self.cv:
                if not self.choices:
                    self.cv.wait_for(lambda: self.inbox or self.stopping, timeout=1.0)
                if self.stopping:
                    return
                jobs = self._take()
            try:
                with torch.inference_mode(), self.agent._autocast():
                    if jobs:
                        self._admit(jobs)
                    if self.choices:
                        self._step()
            except Exception as err:  # a bug, not a request: fail what runs, keep serving
                log.exception("decoding failed")
                for job in list(self.running.values()):
                    self._fail(job, f"generation failed: {type(err).__name__}: {err}")
                self.choices, self.state, self.running = [], None, {}

    def _take(self):
        """Waiting jobs that fit in the batch now (at least one when the batch is empty)."""
        rows = sum(c.rows for c in self.choices)
        jobs = []
        while self.inbox and (rows + self.inbox[0].decoding.rows <= self.max_rows or not (rows or jobs)):
            job = self.inbox.popleft()
            rows += job.decoding.rows
            jobs.append(job)
        return jobs

    def _admit(self, jobs):
        ready = []
        for job in jobs:
            if job.cancelled:
                self.stats["cancelled"] += 1
                job.ended = True
                continue
            try:
                ctx = dialogue.build_context(
                    self.agent, job.persona, job.utterances, job.decoding.max_tokens, self.max_context_tokens
                )
            except Exception as err:
                self._fail(job, f"could not read the dialogue: {err}")
                continue
            job.emit("start", {"prompt_tokens": len(ctx.ids) + 1, "notes": ctx.notes})
            ready.append((job, ctx))
        # Prefill calls over contexts of similar lengths: left padding is computed too, so
        # a group closes when padding would pass a fifth of its tokens or the call would
        # pass max_prefill_tokens.
        group, real = [], 0
        for job, ctx in sorted(ready, key=lambda r: len(r[1].ids)):
            width = len(ctx.ids) + 1  # the longest so far: sorted
            padded = width * (len(group) + 1)
            if group and (padded > self.max_prefill_tokens or padded > 1.25 * (real + width)):
                self._prefill(group)
                group, real = [], 0
            group.append((job, ctx))
            real += width
        if group:
            self._prefill(group)

    def _prefill(self, group):
        """Run the contexts once (the agent's encoder: context + <speaker1>) and add their
        choices' rows to the batch. A context that fails alone fails only its job."""
        try:
            prefix = self._encode([ctx for _, ctx in group])
        except Exception:
            if len(group) > 1:
                for one in group:
                    self._prefill([one])
                return
            job = group[0][0]
            log.exception("prefill failed")
            self._fail(job, "the model could not read this dialogue")
            return
        rows, new = [], []
        for i, (job, ctx) in enumerate(group):
            room = self.agent.max_positions - len(ctx.ids)
            max_ts = max(1, min(job.decoding.max_tokens + 1, room))  # the agent's _generate
            block = []
            if self.agent.beam_context_block_ngram > 0:
                block = ctx.dialogue_ids if self.agent.beam_block_full_context else ctx.ids
            for index in range(job.decoding.n):
                choice = Choice(
                    index=index,
                    search=make_search(self.agent, job.decoding, self.device, block),
                    rows=job.decoding.rows_per_choice, max_ts=max_ts, reply_type=ctx.reply_type,
                    temperature=job.decoding.temperature, stop=tuple(job.decoding.stop),
                    decode=self.agent._v2t, eos=self.agent.END_IDX, job=job,
                )
                self.running[id(job)] = job
                new.append(choice)
                rows += [i] * choice.rows
        if rows != list(range(len(prefix))):
            prefix = self.heads.select(prefix, torch.tensor(rows, device=self.device))
        self.choices += new
        self.state = kv_batch.concat([self.state, prefix])
        self._renumber()

    def _encode(self, contexts):
        pad = self.agent.special.pad
        ids, mask = left_pad([c.ids for c in contexts], pad)
        types, _ = left_pad([c.types for c in contexts], pad)
        reply_type = torch.tensor([c.reply_type for c in contexts])
        dev = self.device
        prefix, _ = self.model.encoder(ids.to(dev), types.to(dev), mask.to(dev), reply_type.to(dev))
        return prefix

    def _step(self):
        """Pick each row's next token with its own search, then one model call for all."""
        scores = self.model.output(self.state.last_logits)
        keep, tokens, types = [], [], []
        for choice in self.choices:
            job = choice.job
            if job.cancelled:
                choice.cancel()
            else:
                score = scores[choice.offset: choice.offset + choice.rows]
                if choice.temperature != 1.0:
                    score = score / choice.temperature
                score = F.log_softmax(score, dim=-1, dtype=torch.float32)
                with _rng(job, self.device):
                    delta = choice.advance(score)
                if delta:
                    job.emit("delta", choice.index, delta)
                if choice.done:
                    job.emit("end", choice.index, {
                        "text": choice.text, "finish_reason": choice.finish_reason, "tokens": len(choice.tokens),
                    })
                else:
                    keep += (choice.offset + choice.backtrack()).tolist()
                    tokens += choice.outputs().tolist()
                    types += [choice.reply_type] * choice.rows
            if choice.done:
                self._close(choice)
        self.choices = [c for c in self.choices if not c.done]
        self._renumber()
        self.stats["steps"] += 1
        if not self.choices:
            self.state = None
            return
        if keep != list(range(len(self.state))):
            self.state = kv_batch.trim_left(self.heads.select(self.state, torch.tensor(keep, device=self.device)))
        ids = torch.tensor(tokens, device=self.device)[:, None]
        _, _, self.state = self.heads.extend(self.state, ids, torch.tensor(types, device=self.device)[:, None])

    def _close(self, choice):
        """A choice has ended (its rows leave the batch); its job ends with its last one."""
        job = choice.job
        job.open_choices -= 1
        job.completion_tokens += len(choice.tokens)
        self.stats["generated_tokens"] += len(choice.tokens)
        if job.open_choices:
            return
        job.ended = True
        self.running.pop(id(job), None)
        if job.cancelled:
            self.stats["cancelled"] += 1
            self.stats["cancelled_tokens"] += job.completion_tokens
        else:
            self.stats["completed"] += 1
            job.emit("done", {"completion_tokens": job.completion_tokens})

    def _renumber(self):
        offset = 0
        for choice in self.choices:
            choice.offset = offset
            offset += choice.rows

    def _fail(self, job, message):
        self.stats["failed"] += 1
        job.ended = True
        self.running.pop(id(job), None)
        job.emit("error", message)


@contextlib.contextmanager
def _rng(job, device):
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
