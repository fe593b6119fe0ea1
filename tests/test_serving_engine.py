"""The serving engine in-process: batched decoding equals the agent's, token for token.

Real agents on tiny random models (real GPT-2 tokenizer); no HTTP here except the
API-key check, which runs the real app on uvicorn in a thread.
"""
import asyncio
import contextlib
import threading

import pytest
import torch

from conftest import free_port
from parlai_transfertransfo.data.personas import persona_text
from parlai_transfertransfo.serving import dialogue, kv_batch
from parlai_transfertransfo.serving.decoding import Choice, defaults_from_opt
from parlai_transfertransfo.serving.scheduler import Job, Scheduler
from parlai_transfertransfo.serving.rate_limit import RateLimit
from parlai_transfertransfo.serving.sessions import SessionStore, SessionsFull
from serving_helpers import PERSONA, http_json, make_agent, one_thread, run_in_own_loop, shared_model_file

DIALOGUES = [
    ["hi! how are you today?"],
    ["hello", "hey there , what do you do for a living ?", "i am a teacher . and you ?"],
    ["do you have pets?"],
]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return shared_model_file(tmp_path_factory)


@pytest.fixture(scope="module")
def agent(model_file):
    return make_agent(model_file, "--inference", "greedy")


def agent_reply(agent, utterances, persona=PERSONA, seed=None):
    """What `parlai interactive` answers after this dialogue (the bot's turns as its own)."""
    agent.reset()
    agent.observe({"text": persona_text(persona) + "\n" + "\n".join(utterances), "episode_done": False})
    if seed is not None:
        torch.manual_seed(seed)
    return agent.act()["text"]


@contextlib.contextmanager
def decoding_options(agent, inference, beam_size=1, topp=0.9, temperature=1.0):
    """The agent as if started with these --inference/--beam-size/--topp/--temperature."""
    saved = dict(agent.opt), agent.beam_size, agent.temperature
    agent.opt.update(inference=inference, beam_size=beam_size, topp=topp, temperature=temperature)
    agent.beam_size, agent.temperature = beam_size, temperature
    try:
        yield agent
    finally:
        agent.opt.update(saved[0])
        agent.beam_size, agent.temperature = saved[1], saved[2]


def run_jobs(agent, requests):
    """Submit (utterances, decoding) pairs at once to a scheduler; their events, in order."""
    async def main():
        scheduler = Scheduler(agent).start()
        try:
            jobs = [Job(PERSONA, utterances, decoding) for utterances, decoding in requests]
            for job in jobs:
                scheduler.submit(job)
            return await asyncio.gather(*[collect(job) for job in jobs]), scheduler.health()
        finally:
            scheduler.stop()

    async def collect(job):
        return [event async for event in job.stream()]

    return run_in_own_loop(main())



def ends(events):
    return {e[1]: e[2] for e in events if e[0] == "end"}


def test_requests_batched_together_reply_as_the_agent_does_alone(agent):
    """Three dialogues of different lengths in one batch (greedy, then beam 3): each reply
    is the agent's own for that dialogue, and the text streamed is the reply."""
    d = defaults_from_opt(agent.opt)
    beam = d.replace(inference="beam", beam_size=3)
    results, health = run_jobs(agent, [(u, d) for u in DIALOGUES] + [(u, beam) for u in DIALOGUES])
    greedy_expected = [agent_reply(agent, u) for u in DIALOGUES]
    with decoding_options(agent, "beam", beam_size=3, temperature=d.temperature):
        beam_expected = [agent_reply(agent, u) for u in DIALOGUES]
    got = [ends(r)[0]["text"] for r in results]
    assert got == greedy_expected + beam_expected
    for events in results[:3]:
        assert "".join(e[2] for e in events if e[0] == "delta") == ends(events)[0]["text"]
        assert events[-1][0] == "done"
    assert health["completed"] == 6 and health["running_requests"] == 0
    # one model call per step for all six (each needs 21 steps; one after the other: 126)
    assert health["steps"] < 40


def test_seeded_sampling_is_the_agents_after_manual_seed(agent):
    """OpenAI's `seed`: the request samples from its own generator, seeded as
    `torch.manual_seed(seed)` before the agent's act. (Alone in the batch: a random tiny
    model's flat distribution makes nucleus sampling sensitive to the last bit of the
    logits, which other rows in a batch may change.)"""
    d = defaults_from_opt(agent.opt).replace(inference="nucleus", top_p=0.9, temperature=0.7, seed=1234)
    with decoding_options(agent, "nucleus", topp=0.9, temperature=0.7):
        expected = agent_reply(agent, DIALOGUES[0], seed=1234)
    (first,), _ = run_jobs(agent, [(DIALOGUES[0], d)])
    (again,), _ = run_jobs(agent, [(DIALOGUES[0], d)])
    assert ends(first)[0]["text"] == expected == ends(again)[0]["text"]
    (three,), _ = run_jobs(agent, [(DIALOGUES[0], d.replace(n=3))])
    assert len({c["text"] for c in ends(three).values()}) == 3


def test_length_and_stop_end_a_reply_with_their_reason(agent):
    d = defaults_from_opt(agent.opt)
    (full,), _ = run_jobs(agent, [(DIALOGUES[0], d.replace(max_tokens=8))])
    text = ends(full)[0]["text"]
    assert ends(full)[0] == {"text": text, "finish_reason": "length", "tokens": 8}
    stop = text[len(text) // 2: len(text) // 2 + 3]
    (cut,), _ = run_jobs(agent, [(DIALOGUES[0], d.replace(max_tokens=8, stop=(stop,)))])
    assert ends(cut)[0]["text"] == text[: text.index(stop)]
    assert ends(cut)[0]["finish_reason"] == "stop"
    assert stop not in "".join(e[2] for e in cut if e[0] == "delta")  # held back, never sent


def test_a_cancelled_request_leaves_the_batch_and_the_others_finish(agent):
    d = defaults_from_opt(agent.opt)

    async def main():
        scheduler = Scheduler(agent).start()
        try:
            long = Job(PERSONA, DIALOGUES[0], d.replace(max_tokens=500, min_tokens=500))
            short = Job(PERSONA, DIALOGUES[1], d)
            scheduler.submit(long)
            scheduler.submit(short)
            async for event in long.stream():
                if event[0] == "delta":
                    break  # the reader goes away: the job is cancelled
            short_events = [e async for e in short.stream()]
            while scheduler.health()["running_requests"]:
                await asyncio.sleep(0.01)
            return short_events, scheduler.health()
        finally:
            scheduler.stop()

    short_events, health = run_in_own_loop(main())
    assert ends(short_events)[0]["text"] == agent_reply(agent, DIALOGUES[1])
    assert health["cancelled"] == 1 and health["completed"] == 1
    assert health["cancelled_tokens"] < 400


def test_a_request_that_fails_in_its_rows_fails_alone(agent):
    """Past validation, whatever goes wrong in one request's rows fails that request only:
    requests the sampler cannot honour (a top_k past the vocabulary, a temperature it cannot
    divide by, a stop it cannot search for), sent straight to the scheduler while a greedy
    and a beam request are mid-reply, each end with an error, and the two finish with
    exactly the replies they give alone."""
    d = defaults_from_opt(agent.opt).replace(max_tokens=60)
    goods = [(DIALOGUES[0], d), (DIALOGUES[1], d.replace(inference="beam", beam_size=3))]
    bads = [d.replace(inference="topk", top_k=10**6), d.replace(inference="topk", top_k=2**70),
            d.replace(inference="nucleus", temperature=1e-300), d.replace(stop=(None,))]

    async def collect(job):
        return [event async for event in job.stream()]

    async def main():
        scheduler = Scheduler(agent).start()
        try:
            good = [Job(PERSONA, u, dec) for u, dec in goods]
            for job in good:
                scheduler.submit(job)
            readers = [asyncio.ensure_future(collect(job)) for job in good]
            while scheduler.stats["steps"] < 5:
                await asyncio.sleep(0.001)
            bad = [Job(PERSONA, DIALOGUES[2], dec) for dec in bads]
            for job in bad:
                scheduler.submit(job)
            results = await asyncio.gather(*readers, *[collect(job) for job in bad])
            return results, scheduler.health(), max(job.finished for job in bad) < min(job.finished for job in good)
        finally:
            scheduler.stop()

    results, health, failed_first = run_in_own_loop(main())
    alone = [run_jobs(agent, [request])[0][0] for request in goods]
    assert [ends(r)[0]["text"] for r in results[:2]] == [ends(r)[0]["text"] for r in alone]
    errors = [r[-1] for r in results[2:]]
    assert [e[0] for e in errors] == ["error"] * 4
    assert "RuntimeError" in errors[0][1] and "FloatingPointError" in errors[2][1], errors
    assert health["failed"] == 4 and health["completed"] == 2 and health["running_requests"] == 0
    assert failed_first  # the good ones went on after the failures


@pytest.mark.parametrize("backbone", ["tiny_gpt2_dir", "tiny_llama_dir", "tiny_openai_gpt_dir"])
def test_padded_batch_continues_each_context_as_alone(backbone, request):
    """kv_batch: contexts of different lengths joined (left padding) and trimmed again
    give each row the next-token logits it gets alone."""
    from parlai_transfertransfo.weights import backbones

    heads = backbones.load_double_heads(request.getfixturevalue(backbone)).eval()
    contexts = [[1, 10, 11, 12, 13, 14, 15], [1, 20, 21]]
    speaker = 2

    def encode(ids):
        t = torch.tensor([ids])
        return heads.encode_prefix(t, torch.full_like(t, speaker), torch.ones_like(t))

    def step(prefix, token):
        t = torch.tensor([[token]] * len(prefix))
        return heads.extend(prefix, t, torch.full_like(t, speaker))[2]

    with torch.no_grad():
        alone = [step(encode(c), 30) for c in contexts]
        batch = step(kv_batch.concat([encode(c) for c in contexts]), 30)
        for i in range(2):
            torch.testing.assert_close(batch.last_logits[i], alone[i].last_logits[0], rtol=1e-4, atol=1e-4)
        short_only = kv_batch.trim_left(heads.select(batch, torch.tensor([1])))
        assert short_only.mask.size(1) == len(contexts[1]) + 1  # the long row's columns are gone
        torch.testing.assert_close(step(short_only, 40).last_logits, step(alone[1], 40).last_logits,
                                   rtol=1e-4, atol=1e-4)


def test_suggestions_see_the_dialogue_from_the_users_side(agent):
    """The model speaks as the user: after the bot's reply, the bot is the partner
    (<speaker2>) and the user's own turns are <speaker1>, after ConvAI2's silence."""
    s = agent.special
    history = ["hi there", "hello ! i love cats ."]
    ctx = dialogue.build_context(agent, ["i am a nurse ."], dialogue.user_side(history), 20)
    speakers = [t for t in ctx.ids if t in (s.speaker1, s.speaker2)]
    assert speakers == [s.speaker2, s.speaker1, s.speaker2]  # silence, the user, the bot
    assert agent.dict.vec2txt(ctx.ids).startswith("i am a nurse .__SILENCE__hi there")


def test_persona_text_splits_into_sentences():
    assert dialogue.persona_sentences("your persona: i love cats. i have two dogs!\ni am a nurse .|x") == [
        "i love cats.", "i have two dogs!", "i am a nurse .", "x"]
    assert dialogue.persona_sentences("  \n") == []


def test_streamed_text_holds_back_what_may_become_a_stop_sequence():
    choice = Choice(index=0, search=None, rows=1, max_ts=9, reply_type=0, temperature=1.0,
                    stop=("END",), decode=None, eos=0)
    assert choice._delta("hello E") == "hello "
    assert choice._delta("hello EN") == ""
    assert choice._delta("hello ENx") == "ENx"
    assert choice._delta("hello ENx caf\ufffd") == " caf"  # an incomplete UTF-8 character waits


def test_sessions_expire_when_idle_and_a_new_one_never_evicts_one_in_use():
    now = [0.0]
    store = SessionStore(ttl=60, max_sessions=2, clock=lambda: now[0])
    a = store.create(["p"], [], {})
    now[0] = 10
    b = store.create(["q"], [], {})
    now[0] = 30
    with pytest.raises(SessionsFull) as full:  # both were used in the last 60 s: neither goes
        store.create(["r"], [], {})
    assert "--max-sessions" in str(full.value) and full.value.retry_after == 30  # when a expires
    assert store.get(a.id) is a and store.get(b.id) is b
    now[0] = 91  # b idle for 61 s, a for 61 s too (read at 30): both expire
    c = store.create(["r"], [], {})
    assert store.get(b.id) is None and store.get(c.id) is c and len(store) == 1
    assert len(a.id) >= 20  # ids are unguessable capabilities


def test_the_rate_limit_allows_a_burst_then_refills_evenly():
    now = [0.0]
    limit = RateLimit(per_minute=3, clock=lambda: now[0])
    assert [limit.take("a") for _ in range(3)] == [0.0] * 3
    assert limit.take("a") == pytest.approx(20.0) and limit.take("b") == 0.0  # per address
    now[0] = 20.0
    assert limit.take("a") == 0.0 and limit.take("a") == pytest.approx(20.0)
    assert RateLimit(per_minute=0).take("a") == 0.0  # 0: no limit


def test_api_key_guards_the_api_and_counters_and_a_full_store_refuses_new_sessions(agent):
    """The real app on uvicorn: --api-key guards /v1, /api, /metrics, /tokenize and the
    counters of /health, never the page; with every session place taken, creating one is a
    503 and evicts nobody; /health says 503 once the model no longer decodes."""
    import urllib.request

    import uvicorn

    from parlai_transfertransfo.serving.app import ServeConfig, create_app

    scheduler = Scheduler(agent).start()
    config = ServeConfig(model_id="tiny", defaults=defaults_from_opt(agent.opt), default_persona=PERSONA,
                         new_persona=lambda: PERSONA, random_persona=lambda: PERSONA, api_key="s3cret",
                         max_sessions=2, session_rate_limit=0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(scheduler, config), port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    key = {"Authorization": "Bearer s3cret"}
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = 200
        while not server.started and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        status, body = http_json("GET", url + "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert http_json("GET", url + "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        for method, path in [("POST", "/api/sessions"), ("GET", "/metrics"), ("POST", "/tokenize"),
                             ("POST", "/detokenize"), ("POST", "/v1/completions")]:
            assert http_json(method, url + path)[0] == 401, path
        status, body = http_json("GET", url + "/v1/models", headers=key)
        assert status == 200 and body["data"][0]["id"] == "tiny"
        with urllib.request.urlopen(url + "/") as page:
            assert b"TransferTransfo" in page.read()
        assert http_json("GET", url + "/health")[1] == {"status": "ok", "model": "tiny"}  # no counters
        assert http_json("GET", url + "/health", headers=key)[1]["requests"] == 0
        with urllib.request.urlopen(urllib.request.Request(url + "/metrics", headers=key)) as r:
            assert b"transfertransfo_page_sessions 0.0" in r.read()
        a, b = [http_json("POST", url + "/api/sessions", headers=key)[1] for _ in range(2)]
        status, body = http_json("POST", url + "/api/sessions", headers=key)
        assert status == 503 and "(2, --max-sessions)" in body["error"]["message"]
        for session in (a, b):
            assert http_json("GET", f"{url}/api/sessions/{session['id']}", headers=key)[0] == 200
        scheduler.stop()
        assert http_json("GET", url + "/health") == (503, {"status": "unavailable", "model": "tiny"})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        scheduler.stop()


def test_the_model_loads_off_the_main_thread_and_errors_come_back():
    """serve_transfertransfo loads its agent through off_main_thread.call (the main thread
    keeps no OpenMP pool to slow the scheduler's): the result and any error come back as
    if the call ran here, and it ran on a thread of its own."""
    from parlai_transfertransfo.errors import TransfertransfoError
    from parlai_transfertransfo.serving import off_main_thread

    ran_on = off_main_thread.call(lambda: threading.current_thread())
    assert ran_on is not threading.main_thread() and not ran_on.is_alive()
    with pytest.raises(TransfertransfoError, match="no such model"):
        off_main_thread.call(lambda: (_ for _ in ()).throw(TransfertransfoError("no such model")))
    import inspect
    from parlai_transfertransfo.scripts import serve_transfertransfo

    assert "off_main_thread.call(load_agent, opt)" in inspect.getsource(serve_transfertransfo.ServeTransfertransfo.run)
