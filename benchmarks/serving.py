"""P6 serving: 16 chat sessions at once vs the same 16 requests one at a time.

Both sides go through the server's scheduler (serving/scheduler.py) in this process:
"at once" submits the 16 requests together, so they share one prefill call and one
model call per decoding step; "one at a time" submits each after the previous reply.
Each session is a real ConvAI2 dialog at the same turn (its persona and the recipe's
history window; TURNS), greedy replies of exactly 20 tokens (`--beam-min-length 20`), so both
sides generate the same tokens (checked first). Reported: aggregate reply tokens/s and
the p50/p95 latency of a request, from its submission to its last token.

Each side also runs with the persona cache off (`--persona-cache-mib 0`: every context
runs whole), the previous path: the cache's gain, measured in the same interleaving. With
it on, a later message finds its session's persona computed by an earlier one (here:
the check's first pass), as in a chat; an opening message finds the cache empty.

P6b, the cost of isolation: the same 16 sessions at once, and once their replies are
streaming, one poisoned request joins them (a top_k past the vocabulary, sent straight to
the scheduler as if validation had missed it: it is prefilled, joins the batch and fails
at its first step). Its failure must cost the 16 almost nothing (goal: >= 95% of P6's
throughput), and their replies must be exactly P6's (checked first). On a CPU the two
sides are compared by this process's CPU seconds (cpu_clock), as P8 is: wall times on this
shared machine spread by a third between repetitions.
"""
import asyncio
import statistics
import time

from benchmarks.common import make_agent
from benchmarks.roofline import model_sizes
from parlai_transfertransfo.recipe import segments
from parlai_transfertransfo.serving import off_main_thread
from parlai_transfertransfo.serving.decoding import defaults_from_opt
from parlai_transfertransfo.serving.scheduler import Job, Scheduler

STEPS = 20
# a session's opening message (persona + one utterance) and one later in the chat (the
# recipe's full history window): the longer the context, the more of the work is the
# prefill, which batching cannot make cheaper on a CPU (it is compute-bound either way)
TURNS = ((0, "opening message"), (2, "third message"))
AT_ONCE, ONE_BY_ONE = "16 sessions at once (dynamic batching)", "the same requests one at a time"
WHOLE = ", whole contexts (no persona cache)"
SIDES = (AT_ONCE, ONE_BY_ONE, AT_ONCE + WHOLE, ONE_BY_ONE + WHOLE)
POISONED = AT_ONCE + ", one poisoned request among them"
P6B_SIDES = (AT_ONCE, POISONED)


def sessions(dialogs, n, turn):
    """(persona sentences, utterances up to the partner's `turn`-th) of n real dialogs."""
    out = []
    for persona_lines, turns in dialogs:
        if len(turns) <= turn:
            continue
        persona = [line[len(segments.YOUR_PERSONA):] for line in persona_lines]
        utterances = [u for partner, reply, _ in turns[:turn] for u in (partner, reply)] + [turns[turn][0]]
        out.append((persona, utterances))
        if len(out) == n:
            return out
    raise ValueError(f"fewer than {n} dialogs with {turn + 1} turns")


async def _serve(scheduler, requests, decoding, together, poison=None):
    """(reply, latency) of each request. With `poison` (persona, utterances, decoding): that
    request is submitted once the first reply token has come, and must fail."""
    streaming = asyncio.Event()

    async def one(persona, utterances, decoding=decoding):
        job = Job(persona, utterances, decoding)
        scheduler.submit(job)
        text = None
        async for event in job.stream():
            if event[0] == "delta":
                streaming.set()
            elif event[0] == "end":
                text = event[2]["text"]
            elif event[0] == "error":
                raise RuntimeError(event[1])
        return text, time.perf_counter() - job.submitted

    async def poisoned():
        await streaming.wait()
        try:
            await one(*poison)
        except RuntimeError:
            return
        raise AssertionError("P6b: the poisoned request did not fail")

    if together:
        return (await asyncio.gather(*[one(*r) for r in requests], *([poisoned()] if poison else [])))[:len(requests)]
    return [await one(*r) for r in requests]


def run(model, workdir, device, reps, dialogs, n_sessions=16, turn=2, sides=SIDES, cpu_clock=False):
    """cpu_clock: the sides' times (and so their throughput) in this process's CPU seconds,
    not wall seconds: on a CPU shared with other jobs, what a few per cent apart can be
    told by (the wall times are kept under "wall")."""
    # as the server loads it: off the main thread (serving/off_main_thread.py)
    agent = off_main_thread.call(make_agent, model, workdir, device, "--inference", "greedy", "--beam-min-length",
                                 STEPS, "--label-truncate", STEPS)
    decoding = defaults_from_opt(agent.opt)
    requests = sessions(dialogs, n_sessions, turn)
    scheduler = Scheduler(agent, max_rows=max(32, n_sessions), max_prefill_tokens=8192).start()
    cache = agent.model.persona_cache
    try:
        def side(name):
            agent.model.persona_cache = None if name.endswith(WHOLE) else cache
            if turn == 0:
                cache.clear()  # a chat's first message: its persona is new
            start, cpu_start = time.perf_counter(), time.process_time()
            poison = None
            if name == POISONED:  # a request validation would refuse: it fails in the scheduler
                poison = (requests[0][0], requests[0][1], decoding.replace(inference="topk", top_k=10**6))
            results = asyncio.run(_serve(scheduler, requests, decoding, name.startswith(AT_ONCE), poison))
            cpu[name].append(time.process_time() - cpu_start)
            return time.perf_counter() - start, results

        cpu = {name: [] for name in sides}  # this process's CPU seconds: the neighbours' load left out
        # Same computation first: every side gives the same replies.
        replies = {name: [t for t, _ in side(name)[1]] for name in sides}
        if any(r != replies[AT_ONCE] for r in replies.values()):
            raise AssertionError(f"P6 {model}: the sides' replies differ")
        failed = scheduler.stats["failed"]
        times, latencies = {name: [] for name in sides}, {name: [] for name in sides}
        for rep in range(reps):  # interleaved: the order rotates every repetition
            for name in sides[rep % len(sides):] + sides[:rep % len(sides)]:
                seconds, results = side(name)
                times[name].append(seconds)
                latencies[name] += [latency for _, latency in results]
    finally:
        agent.model.persona_cache = cache
        scheduler.stop()
    tokens = n_sessions * STEPS
    context = statistics.mean(len(_context_ids(agent, r)) for r in requests)
    cpu = {name: ts[1:] for name, ts in cpu.items()}  # the check's pass left out
    wall, times = times, (cpu if cpu_clock else times)
    return {
        "times": times, "wall": wall, "cpu": cpu,
        "tokens_per_s": {name: tokens / statistics.median(ts) for name, ts in times.items()},
        "latency": {name: (_percentile(ls, 50), _percentile(ls, 95)) for name, ls in latencies.items()},
        "context_tokens": round(context), "sessions": n_sessions, "turn": turn,
        "poisoned_failed": scheduler.stats["failed"] - failed,  # in the timed repetitions
        "sizes": model_sizes(agent.model.double_heads.lm),
        "contexts": [_context_ids(agent, r) for r in requests],  # P6-peer sends the same ids
    }


def _context_ids(agent, request):
    from parlai_transfertransfo.serving.dialogue import build_context

    return build_context(agent, request[0], request[1], STEPS).ids


def _percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]
