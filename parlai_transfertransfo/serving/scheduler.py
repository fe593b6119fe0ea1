"""Dynamic batching: one thread owns the model and decodes every request in flight at once.

Each loop: requests that arrived are admitted (their contexts run through the model in
one prefill call, with `<speaker1>` as the agent's encoder does), then ONE model call
advances every row of every request by a token. Each request keeps its own ParlAI tree
search (decoding.py), sampling RNG and stop rules; rows leave the batch as soon as their
request ends, is cancelled (client gone) or fails, without touching the others.

One request can never harm another: its settings were validated at the edge
(validation.py), and past that, whatever goes wrong in its own rows (its search, its
sampler, scores that are not finite numbers) fails that request alone. The others in the
same step go on and produce exactly the tokens they would have produced without it.

HTTP handlers talk to it through `Job` (job.py): `submit` returns at once, events come
back on the job's asyncio queue.
"""
import collections
import logging
import threading
import time

import torch
import torch.nn.functional as F

from parlai_transfertransfo.recipe.prefix import left_pad
from parlai_transfertransfo.serving import dialogue, kv_batch
from parlai_transfertransfo.serving.decoding import Choice, make_search
from parlai_transfertransfo.serving.job import Job, own_rng

__all__ = ["Job", "QueueFull", "Scheduler"]
log = logging.getLogger("transfertransfo.serve")
STATS = ("requests", "completed", "cancelled", "failed", "cancelled_tokens", "generated_tokens", "prompt_tokens",
         "steps", "row_steps")


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""


class Scheduler:
    """Owns the agent's model in one thread; see the module docstring."""

    def __init__(self, agent, max_rows=32, max_queue=256, max_context_tokens=512, max_prefill_tokens=4096):
        self.agent = agent
        self.model = agent.model.module if hasattr(agent.model, "module") else agent.model
        self.heads = self.model.double_heads
        self.model.eval()  # no dropout: what the agent's eval_step runs
        self.device = next(self.model.parameters()).device
        self.vocab_size = self.heads.vocab_size  # what top_k may reach
        self.max_rows, self.max_queue = max_rows, max_queue
        self.max_context_tokens, self.max_prefill_tokens = max_context_tokens, max_prefill_tokens
        self.inbox = collections.deque()
        self.cv = threading.Condition()
        self.choices = []  # every running Choice, in batch-row order
        self.running = {}  # id -> every job that has rows in the batch
        self.state = None  # their rows' cached contexts (a Prefix), or None when idle
        # every key there from the start: readers on other threads copy it while it changes
        self.stats = collections.Counter({name: 0 for name in STATS})
        self.on_end = None  # called with each job as it leaves (from this thread): /metrics
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

    def alive(self):
        """Whether it decodes: the model is loaded and its thread runs."""
        return self.thread.is_alive() and not self.stopping

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
            except Exception as err:  # the shared model call itself: fail what runs, keep serving
                log.exception("decoding failed")
                for job in list(self.running.values()):
                    self._fail(job, f"generation failed: {type(err).__name__}: {err}", own=False)
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
                self._end(job, "cancelled")
                continue
            try:
                ctx = dialogue.build_context(
                    self.agent, job.persona, job.utterances, job.decoding.max_tokens, self.max_context_tokens
                )
            except Exception as err:
                self._fail(job, f"could not read the dialogue: {err}")
                continue
            job.prompt_tokens = len(ctx.ids) + 1
            self.stats["prompt_tokens"] += job.prompt_tokens
            job.emit("start", {"prompt_tokens": job.prompt_tokens, "notes": ctx.notes})
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
            try:
                choices = self._choices(job, ctx)
            except Exception as err:  # its settings: this job alone
                log.exception("could not start a search")
                self._fail(job, f"generation failed: {type(err).__name__}: {err}")
                continue
            self.running[id(job)] = job
            new += choices
            rows += [i] * sum(c.rows for c in choices)
        if not new:
            return
        if rows != list(range(len(prefix))):
            prefix = self.heads.select(prefix, torch.tensor(rows, device=self.device))
        self.choices += new
        self.state = kv_batch.concat([self.state, prefix])
        self._renumber()

    def _choices(self, job, ctx):
        """A job's choices (OpenAI's `n`), each with the search the agent would build."""
        room = self.agent.max_positions - len(ctx.ids)
        max_ts = max(1, min(job.decoding.max_tokens + 1, room))  # the agent's _generate
        block = []
        if self.agent.beam_context_block_ngram > 0:
            block = ctx.dialogue_ids if self.agent.beam_block_full_context else ctx.ids
        d = job.decoding
        return [Choice(index=index, search=make_search(self.agent, d, self.device, block),
                       rows=d.rows_per_choice, max_ts=max_ts, reply_type=ctx.reply_type,
                       temperature=d.temperature, stop=tuple(d.stop), decode=self.agent._v2t,
                       eos=self.agent.END_IDX, job=job, logprobs=d.logprobs)
                for index in range(d.n)]

    def _encode(self, contexts):
        pad = self.agent.special.pad
        ids, mask = left_pad([c.ids for c in contexts], pad)
        types, _ = left_pad([c.types for c in contexts], pad)
        reply_type = torch.tensor([c.reply_type for c in contexts])
        dev = self.device
        prefix, _ = self.model.encoder(ids.to(dev), types.to(dev), mask.to(dev), reply_type.to(dev))
        return prefix

    def _step(self):
        """Pick each row's next token with its own search, then one model call for all.

        A choice whose search raises fails its job: the job's rows leave the batch before
        the model call, so the other rows are computed exactly as they would be without it.
        """
        scores = self.model.output(self.state.last_logits)
        self.stats["row_steps"] += len(scores)
        failed = {}  # id(job) -> why
        for choice in self.choices:
            job = choice.job
            if job.cancelled:
                choice.cancel()
            elif id(job) not in failed:
                try:
                    self._advance(choice, scores)
                except Exception as err:
                    log.warning("a request failed while decoding: %s: %s", type(err).__name__, err)
                    failed[id(job)] = f"generation failed: {type(err).__name__}: {err}"
        keep, tokens, types = [], [], []
        for choice in self.choices:
            if id(choice.job) in failed:
                choice.cancel()
                if choice.job.outcome is None:
                    self._fail(choice.job, failed[id(choice.job)])
            elif choice.done:
                self._close(choice)
            else:
                keep += (choice.offset + choice.backtrack()).tolist()
                tokens += choice.outputs().tolist()
                types += [choice.reply_type] * choice.rows
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

    def _advance(self, choice, scores):
        """One step of one choice on its rows' scores; its events go out as they come."""
        job = choice.job
        raw = scores[choice.offset: choice.offset + choice.rows]
        score = raw / choice.temperature if choice.temperature != 1.0 else raw
        score = F.log_softmax(score, dim=-1, dtype=torch.float32)
        # one reduction a row: its max is NaN if any score is, -inf if none is finite
        if not bool(torch.isfinite(score.amax(-1)).all()):
            raise FloatingPointError("the scores of this request's rows are not finite numbers")
        # the model's own distribution (temperature 1), before the search edits `score`
        model_logprobs = None if choice.logprobs is None else F.log_softmax(raw[0], dim=-1, dtype=torch.float32)
        chosen = len(choice.tokens)
        with own_rng(job, self.device):
            delta = choice.advance(score)
        if len(choice.tokens) > chosen:
            job.first_token = job.first_token or time.perf_counter()
            if model_logprobs is not None:
                choice.record_logprobs(model_logprobs)
        if delta:
            job.emit("delta", choice.index, delta, choice.unsent_logprobs())
        if choice.done:
            end = {"text": choice.text, "finish_reason": choice.finish_reason, "tokens": len(choice.tokens)}
            if choice.logprobs is not None:
                end.update(logprobs=choice.token_logprobs, unsent_logprobs=choice.unsent_logprobs())
            job.emit("end", choice.index, end)

    def _close(self, choice):
        """A choice has ended (its rows leave the batch); its job ends with its last one."""
        job = choice.job
        job.open_choices -= 1
        job.completion_tokens += len(choice.tokens)
        self.stats["generated_tokens"] += len(choice.tokens)
        if job.open_choices:
            return
        self.running.pop(id(job), None)
        if job.cancelled:
            self.stats["cancelled_tokens"] += job.completion_tokens
            self._end(job, "cancelled")
        else:
            self._end(job, "completed")  # counted before its reader hears of it
            job.emit("done", {"completion_tokens": job.completion_tokens})

    def _renumber(self):
        offset = 0
        for choice in self.choices:
            choice.offset = offset
            offset += choice.rows

    def _fail(self, job, message, own=True):
        """own: the job's own dialogue or settings failed (trying it again cannot help);
        else the shared model call did."""
        self.running.pop(id(job), None)
        self._end(job, "failed")
        job.emit("error", message, own)

    def _end(self, job, outcome):
        job.ended, job.outcome, job.finished = True, outcome, time.perf_counter()
        self.stats[outcome] += 1
        if self.on_end is not None:
            try:
                self.on_end(job)
            except Exception:  # metrics must never stop decoding
                log.exception("recording a finished request failed")
