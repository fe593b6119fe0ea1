"""`parlai serve_transfertransfo` as users run it: a real server process, the official
`openai` client, and the chat page in headless Chromium (Playwright).

One server for the module (a tiny random GPT-2 with 1024 positions and GPT-2's real
tokenizer, saved as a ParlAI model file); greedy replies are checked against the agent's
own `act` on the same model file.
"""
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

import openai
import pytest
import torch

from conftest import free_port
from parlai_transfertransfo.data.personas import DEFAULT_PERSONA, persona_text
from serving_helpers import PARLAI, PERSONA, ServerProcess, http_json, make_agent, shared_model_file

# the module's clients come from 127.0.0.1, which is also trusted as a proxy: a test that
# sends X-Forwarded-For is a client of its own for the per-client session limit
SERVER_ARGS = ["--max-tokens-limit", 1000, "--max-message-chars", 20000, "--max-context-tokens", 0,
               "--cors-origins", "https://allowed.example", "--forwarded-allow-ips", "127.0.0.1",
               "--session-rate-limit", 30]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return shared_model_file(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    proc = ServerProcess(model_file, *SERVER_ARGS, log_path=tmp_path_factory.mktemp("log") / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def agent(model_file):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_agent(model_file, "--inference", "greedy")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def agent_reply(agent, utterances, persona=PERSONA):
    agent.reset()
    obs = agent.observe({"text": persona_text(persona) + "\n" + "\n".join(utterances), "episode_done": False})
    return agent.act()["text"], len(obs["text_vec"])


def chat(persona, utterances):
    """OpenAI messages: the persona as the system message, then user/assistant turns."""
    messages = [{"role": "system", "content": " ".join(persona)}]
    for i, text in enumerate(utterances):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


# ---------------------------------------------------------------------------- the command
def test_start_errors_are_one_line(server, model_file, tmp_path):
    """A missing model file and a port in use: one line each, no traceback (run beside the
    module's server, which starts meanwhile)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        runs = {
            "missing": subprocess.Popen([PARLAI, "serve_transfertransfo", "-mf", tmp_path / "nothing" / "model",
                                         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            "in use": subprocess.Popen([PARLAI, "serve_transfertransfo", "-mf", model_file, "--port", str(port)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        }
        out = {name: run.communicate(timeout=300)[0] for name, run in runs.items()}
    for name, run in runs.items():
        assert run.returncode != 0 and "Traceback" not in out[name], out[name]
    assert f"the model file {tmp_path / 'nothing' / 'model'} does not exist" in out["missing"]
    assert f"port {port} on 127.0.0.1 is already in use" in out["in use"]
    assert "Loading" not in out["in use"]  # refused before the model loads
    assert server.url.startswith("http://127.0.0.1:")  # binds to this machine only by default


# ------------------------------------------------------------------------------- the API
def test_greedy_replies_equal_the_agents_act_streamed_or_not(client, agent):
    """Two turns of a chat through the official client: each greedy reply is the one
    `parlai interactive` gives, whole or streamed as OpenAI chunks, with usage."""
    models = client.models.list().data
    assert [m.id for m in models] == ["mf/model"]  # the model file's folder and name
    model = models[0].id
    history = ["hi! how are you today?"]
    for turn in range(2):
        expected, context_tokens = agent_reply(agent, history)
        reply = client.chat.completions.create(model=model, messages=chat(PERSONA, history), temperature=0)
        assert reply.choices[0].message.content == expected
        assert reply.usage.prompt_tokens == context_tokens + 1  # + the reply's <speaker1>
        assert 0 < reply.usage.completion_tokens <= 20
        chunks = list(client.chat.completions.create(
            model=model, messages=chat(PERSONA, history), temperature=0, stream=True,
            stream_options={"include_usage": True}))
        deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(deltas) == expected and len(deltas) > 1  # token by token
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
        history += [expected, "what do you do for a living?"]


def test_openai_fields_are_honoured(client):
    model = client.models.list().data[0].id
    messages = chat(PERSONA, ["do you like cats?"])
    short = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4)
    assert short.usage.completion_tokens == 4 and short.choices[0].finish_reason == "length"
    full = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12).choices[0]
    stop = full.message.content[6:9]
    cut = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12, stop=[stop])
    assert cut.choices[0].message.content == full.message.content[: full.message.content.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    sampled = [client.chat.completions.create(model=model, messages=messages, temperature=0.9, top_p=0.95,
                                              seed=7, n=2, max_tokens=8) for _ in range(2)]
    assert len(sampled[0].choices) == 2
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]


def test_bad_requests_get_openai_errors_and_harm_no_other_request(client, server):
    """While a long streamed reply runs, every kind of bad request gets its status and a
    message naming the field; the stream still ends with the same text as alone."""
    model = client.models.list().data[0].id
    good = chat(PERSONA, ["tell me about your dogs"])
    alone = client.chat.completions.create(model=model, messages=good, temperature=0, max_tokens=200,
                                           extra_body={"min_tokens": 200}).choices[0].message.content
    streamed = []
    stream = client.chat.completions.create(model=model, messages=good, temperature=0, max_tokens=200, stream=True,
                                            extra_body={"min_tokens": 200})
    reader = threading.Thread(target=lambda: streamed.extend(c.choices[0].delta.content or "" for c in stream if c.choices))
    reader.start()
    url = server.url + "/v1/chat/completions"
    cases = [
        (b'{"model": "x", "messages": [', 400, "not valid JSON"),
        ({"model": model, "messages": good, "temperature": "hot"}, 400, "temperature:"),
        ({"model": model, "messages": "hello"}, 400, "messages:"),
        ({"model": model, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role:"),
        ({"model": model, "messages": good, "n": 0}, 400, "n:"),
        ({"model": model, "messages": good, "n": 40}, 400, "n: 40 choice(s)"),
        ({"model": model, "messages": good, "max_tokens": 5000}, 400, "max_tokens: 5000"),
        ({"model": model, "messages": [{"role": "user", "content": "x" * 20001}]}, 400, "messages.0.content: 20001 characters"),
        ({"model": model, "messages": good[:1]}, 400, "the last message must be the user's"),
        ({"model": "gpt-4", "messages": good}, 404, "model 'gpt-4' does not exist"),
        (json.dumps({"model": model, "messages": good, "pad": "x" * 300000}).encode(), 413, "request body too large"),
    ]
    for body, status, message in cases:
        got_status, got = http_json("POST", url, body)
        assert got_status == status and message in got["error"]["message"], (body if len(str(body)) < 200 else message, got)
        assert set(got["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=good, top_p=3)
    assert err.value.body["param"] == "top_p"
    reader.join(timeout=120)
    assert "".join(streamed) == alone
    assert http_json("GET", server.url + "/health")[1]["status"] == "ok"


ISOLATION_TOKENS = 200


def test_no_request_harms_another(client, server):
    """8 greedy streams run; in the middle of them, one request of each kind that used to
    fail every request decoding beside it (issue 22), through the API and the page's session
    API, and every bad input named there. Each gets its own answer (a 400 naming the field,
    or a reply), and each of the 8 streams ends with exactly the text it gives alone."""
    import concurrent.futures

    import httpx2

    model = client.models.list().data[0].id
    url = server.url + "/v1/chat/completions"
    dialogues = [["tell me about your dogs"], ["what do you do for a living?"], ["do you like music?"],
                 ["hi! how are you today?"]]
    alone = [client.chat.completions.create(model=model, messages=chat(PERSONA, d), temperature=0,
                                            max_tokens=ISOLATION_TOKENS).choices[0].message.content
             for d in dialogues]
    short = chat(PERSONA, ["i love hiking ."])
    short_alone = client.chat.completions.create(model=model, messages=short, temperature=0,
                                                 max_tokens=30).choices[0].message.content
    before = http_json("GET", server.url + "/health")[1]

    texts, ended, started = [[] for _ in range(8)], [None] * 8, threading.Barrier(9, timeout=120)

    def stream(i):
        chunks = client.chat.completions.create(model=model, messages=chat(PERSONA, dialogues[i % 4]), temperature=0,
                                                max_tokens=ISOLATION_TOKENS, stream=True)
        for c in chunks:
            if c.choices and c.choices[0].delta.content:
                if not texts[i]:
                    started.wait()
                texts[i].append(c.choices[0].delta.content)
        ended[i] = time.monotonic()

    def post(body, **extra):
        raw = body if isinstance(body, bytes) else json.dumps({"model": model, "messages": short, **body}).encode()
        response = httpx2.post(url, content=raw, headers={"Content-Type": "application/json"}, timeout=120, **extra)
        return response.status_code, response.json()

    def refused(param, body, status=400):
        got_status, got = post(body)
        assert got_status == status and got["error"]["param"] == param, (param, got)
        assert got["error"]["message"].startswith(f"{param}: ") and "\n" not in got["error"]["message"]

    def greedy(body):  # a temperature too small to divide by: greedy, as 0
        got_status, got = post({**body, "max_tokens": 30})
        assert got_status == 200 and got["choices"][0]["message"]["content"] == short_alone, got

    kinds = [
        lambda: refused("top_k", {"top_k": 10**6}), lambda: refused("top_k", {"top_k": 2**70}),
        lambda: greedy({"temperature": 1e-300}), lambda: greedy({"temperature": 5e-324}),
        lambda: greedy({"top_p": 1e-300, "temperature": 1e-300}),
        # a nucleus of p ~ 0 holds the likeliest token alone: greedy's tokens, sampled
        lambda: greedy({"top_p": 1e-300}),
        lambda: refused("temperature", {"temperature": 1e-300, "inference": "nucleus"}),
        lambda: refused("temperature", json.dumps({"model": model, "messages": short, "temperature": "NAN"})
                        .replace('"NAN"', "NaN").encode()),
        *[lambda body=body, param=param: refused(param, body) for param, body in [
            ("stream", {"stream": 2}), ("stream", {"stream": []}), ("stream", {"stream": "yes"}),
            ("stream_options.include_usage", {"stream": True, "stream_options": {"include_usage": "yes"}}),
            ("messages.2.content", {"messages": [short[1], {"role": "assistant", "content": "ok"},
                                                 {"role": "user", "content": 5}]}),
            ("temperature", {"temperature": True}), ("temperature", {"temperature": "0.5"}),
            ("max_tokens", {"max_tokens": "5"}), ("max_tokens", {"max_tokens": 5.0}), ("n", {"n": "2"}),
            ("seed", {"seed": "7"}), ("messages.1.content", {"messages": [short[0], {"role": "user",
                                                                                     "content": "hi \udfff there"}]}),
            ("n", {"n": 9, "inference": "beam", "beam_size": 4}),
            ("stop.1", {"stop": ["ok", "x" * 257]}), ("top_logprobs", {"logprobs": True, "top_logprobs": 21}),
            ("top_logprobs", {"top_logprobs": 2}),
        ]],
        lambda: greedy({"stream": None, "temperature": 0}),
        lambda: bad_page_session(server),
        lambda: oversized(server, client, model),
        lambda: scrape(server),
    ]
    readers = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for reader in readers:
        reader.start()
    started.wait()  # every stream has its first token
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(kind) for kind in kinds]:
            done.result()
    poisons_answered = time.monotonic()
    with pytest.raises(openai.BadRequestError):  # the client's default retries: a 400 is not retried
        openai.OpenAI(base_url=server.url + "/v1", api_key="unused").chat.completions.create(
            model=model, messages=short, extra_body={"top_k": 10**6})
    for reader in readers:
        reader.join(timeout=180)
    assert ["".join(t) for t in texts] == [alone[i % 4] for i in range(8)]
    assert all(end > poisons_answered for end in ended)  # they were all in the middle of the streams
    after = http_json("GET", server.url + "/health")[1]
    assert after["failed"] == before["failed"] and after["status"] == "ok"


def bad_page_session(server):
    """The page's session API: a setting too small to divide by, lone surrogates in either
    persona and in a message are refused with the field's name and stored nowhere; the
    session stays readable and answers."""
    api = server.url + "/api/sessions"
    session = http_json("POST", api)[1]
    for body, param in [({"settings": {"temperature": 1e-300}}, "settings.temperature"),
                        ({"settings": {"top_k": "5"}}, "settings.top_k"),
                        ({"persona": "\ud800 i love cats."}, "persona"),
                        ({"user_persona": "i love dogs. \udc00", "persona": "i am new."}, "user_persona")]:
        status, got = http_json("PATCH", f"{api}/{session['id']}", body)
        assert status == 400 and got["error"]["param"] == param, got
    status, got = http_json("POST", f"{api}/{session['id']}/messages", {"text": "hi \udfff there"})
    assert status == 400 and got["error"]["param"] == "text", got
    assert http_json("PATCH", f"{api}/{session['id']}", {"settings": {"inference": "greedy", "max_tokens": 30}})[0] == 200
    request = urllib.request.Request(f"{api}/{session['id']}/messages", data=json.dumps({"text": "hi there"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request) as r:
        assert "event: reply" in r.read().decode()
    status, now = http_json("GET", f"{api}/{session['id']}")
    assert status == 200 and now["persona"] == session["persona"] and now["user_persona"] == session["user_persona"]
    assert [t["text"] for t in now["history"]][0] == "hi there" and now["settings"]["temperature"] > 0.01


def oversized(server, client, model):
    """A 10 MB body: its 413 reaches the client (httpx2, the official client's own HTTP
    library, and the official client), not a reset connection."""
    import httpx2

    big = {"model": model, "messages": [{"role": "user", "content": "x" * 10_000_000}]}
    response = httpx2.post(server.url + "/v1/chat/completions", json=big, timeout=120)
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["error"]["message"]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=model, messages=big["messages"])
    assert err.value.status_code == 413 and "request body too large" in err.value.message


def metrics(server):
    """/metrics parsed by prometheus-client's own parser: {(sample name, labels...): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.url + "/metrics", timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(server):
    """/metrics under full load: every family there, the 8 streams in its batch rows."""
    got = metrics(server)
    assert got[("transfertransfo_batch_rows",)] >= 8
    names = {key[0] for key in got}
    assert {"transfertransfo_http_requests_total", "transfertransfo_generations_total",
            "transfertransfo_queued_requests", "transfertransfo_time_to_first_token_seconds_bucket",
            "transfertransfo_request_latency_seconds_count", "transfertransfo_page_sessions",
            "transfertransfo_prompt_tokens_total", "transfertransfo_generation_tokens_total"} <= names


def test_static_files_never_leave_their_folder(server):
    import http.client

    host, port = server.url[len("http://"):].split(":")
    for path in ["/static/../../setup.py", "/static/..%2f..%2fsetup.py", "/static/%2e%2e/%2e%2e/serving/app.py",
                 "/static/../app.py", "/static//etc/passwd"]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", path)  # sent as written, no client-side normalisation
        response = conn.getresponse()
        body = response.read()
        assert response.status == 404 and b"import" not in body and b"root:" not in body, path
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/static/chat.js")
    assert conn.getresponse().status == 200


def test_long_personas_are_truncated_with_a_note_never_an_error(client):
    model = client.models.list().data[0].id
    fifty = [f"my favourite number is {i} and i say it with conviction every single day , to everyone i "
             "meet , at work and at home ." for i in range(50)]  # ~1400 tokens
    huge = "cats " * 1100  # one sentence longer than the model's 1024 positions
    for persona, dropped in [(fifty, "persona sentence(s)"), ([huge, "i have two dogs ."], "dropped 1 persona")]:
        reply = client.chat.completions.create(model=model, messages=chat(persona, ["hi"]), temperature=0)
        assert reply.choices[0].message.content
        assert any(dropped in note for note in reply.model_extra.get("notes", [])), reply.model_extra
        assert reply.usage.prompt_tokens <= 1024 - 20


def test_a_client_that_disconnects_stops_its_generation(client, server):
    model = client.models.list().data[0].id
    before = http_json("GET", server.url + "/health")[1]
    stream = client.chat.completions.create(model=model, messages=chat(PERSONA, ["hello"]), stream=True,
                                            max_tokens=900, extra_body={"min_tokens": 900})
    chunks = iter(stream)
    next(chunks), next(chunks)  # the role chunk and the first token
    other = client.chat.completions.create(model=model, messages=chat(PERSONA, ["hi"]), temperature=0, max_tokens=30)
    stream.close()  # hang up
    deadline = time.time() + 60
    while time.time() < deadline:
        health = http_json("GET", server.url + "/health")[1]
        if health.get("cancelled", 0) > before.get("cancelled", 0) and health["running_requests"] == 0:
            break
        time.sleep(0.1)
    assert health["cancelled"] == before.get("cancelled", 0) + 1
    assert health["cancelled_tokens"] - before.get("cancelled_tokens", 0) < 800  # stopped early
    assert other.usage.completion_tokens == 30
    assert metrics(server)[("transfertransfo_generations_total", ("outcome", "cancelled"))] == health["cancelled"]


def test_page_sessions_are_separate(server):
    api = server.url + "/api/sessions"
    a, b = http_json("POST", api)[1], http_json("POST", api)[1]
    assert a["id"] != b["id"] and a["persona"] == DEFAULT_PERSONA and a["user_persona"]
    http_json("PATCH", f"{api}/{a['id']}", {"persona": "i am a pilot.\ni fly planes."})
    with urllib.request.urlopen(urllib.request.Request(f"{api}/{a['id']}/messages", data=json.dumps({"text": "hi pilot"}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")) as r:
        events = r.read().decode()
    assert "event: token" in events and "event: reply" in events and '"latency_ms"' in events
    a_now, b_now = http_json("GET", f"{api}/{a['id']}")[1], http_json("GET", f"{api}/{b['id']}")[1]
    assert [t["role"] for t in a_now["history"]] == ["user", "bot"] and a_now["history"][0]["text"] == "hi pilot"
    assert a_now["persona"] == ["i am a pilot.", "i fly planes."] and b_now["history"] == []
    assert http_json("POST", f"{api}/{a['id']}/suggestions")[1]["suggestions"]
    assert http_json("POST", f"{api}/{a['id']}/undo")[1]["history"] == []
    assert http_json("GET", f"{api}/no-such-session")[0] == 404
    assert http_json("POST", f"{api}/{a['id']}/messages", {"text": "  "})[0] == 400
    assert http_json("PATCH", f"{api}/{a['id']}", {"settings": {"temperature": "warm"}})[0] == 400


# ------------------------------------------------------- what inference servers are expected to have
def test_health_and_metrics_count_what_happens(client, server):
    """/health: the model is loaded; /metrics (Prometheus' format, read with its own
    parser) counts each answer by status, the tokens in and out, and the latencies."""
    status, health = http_json("GET", server.url + "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "mf/model"
    model = client.models.list().data[0].id
    before = metrics(server)
    reply = client.chat.completions.create(model=model, messages=chat(PERSONA, ["hi"]), temperature=0, max_tokens=7)
    assert http_json("POST", server.url + "/v1/chat/completions", {"model": model, "messages": "x"})[0] == 400
    assert http_json("POST", server.url + "/v1/chat/completions", {"model": "gpt-4", "messages": chat(PERSONA, ["hi"])})[0] == 404
    after = metrics(server)

    def grew(*key):
        return after.get(key, 0) - before.get(key, 0)

    route = ("route", "/v1/chat/completions")
    for code in ("200", "400", "404"):
        assert grew("transfertransfo_http_requests_total", ("method", "POST"), route, ("status", code)) == 1
    assert grew("transfertransfo_prompt_tokens_total") == reply.usage.prompt_tokens
    assert grew("transfertransfo_generation_tokens_total") == 7
    assert grew("transfertransfo_generations_total", ("outcome", "completed")) == 1
    assert grew("transfertransfo_decode_steps_total") >= 7
    for histogram in ("time_to_first_token_seconds", "request_latency_seconds"):
        assert grew(f"transfertransfo_{histogram}_count") == 1 and grew(f"transfertransfo_{histogram}_sum") > 0
    assert after[("transfertransfo_queued_requests",)] == 0 and after[("transfertransfo_max_batch_rows",)] == 32


def test_completions_through_the_official_client(client, agent):
    """POST /v1/completions: the prompt is the dialogue as ParlAI's text (persona as
    `your persona:` lines or `system`); a greedy completion is the agent's own reply."""
    model = client.models.list().data[0].id
    expected, _ = agent_reply(agent, ["hi! how are you today?"])
    whole = client.completions.create(model=model, prompt="hi! how are you today?", temperature=0,
                                      extra_body={"system": " ".join(PERSONA)})
    assert whole.object == "text_completion" and whole.choices[0].text == expected
    prompt = persona_text(PERSONA) + "\nhi! how are you today?"
    chunks = list(client.completions.create(model=model, prompt=prompt, temperature=0, stream=True, logprobs=2,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    logprobs = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    tokens = [t for lp in logprobs for t in lp.tokens]
    assert len(tokens) == chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(len(top) == 2 for lp in logprobs for top in lp.top_logprobs)
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    for extra, param in [({"echo": True}, "echo"), ({"prompt": ["a", "b"]}, "prompt"), ({"logprobs": 6}, "logprobs")]:
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(**{"model": model, "prompt": "hi", **extra})
        assert err.value.body["param"] == param


def test_logprobs_are_the_models_log_softmax(client, agent):
    """logprobs and top_logprobs in OpenAI's shape, whole and streamed: each token's logprob
    is the model's log-softmax at its step, from a direct forward pass over the whole
    sequence (context, the reply's <speaker1>, the reply so far), and its bytes spell the reply."""
    from parlai_transfertransfo.serving.dialogue import build_context

    model = client.models.list().data[0].id
    utterances = ["do you have pets?"]
    whole = client.chat.completions.create(model=model, messages=chat(PERSONA, utterances), temperature=0, max_tokens=8,
                                           logprobs=True, top_logprobs=3, extra_body={"return_tokens_as_token_ids": True})
    content = whole.choices[0].logprobs.content
    ids = [int(e.token.removeprefix("token_id:")) for e in content]
    assert len(ids) == whole.usage.completion_tokens == 8
    agent.reset()
    obs = agent.observe({"text": persona_text(PERSONA) + "\n" + utterances[0], "episode_done": False})
    ctx = build_context(agent, PERSONA, utterances, 8)
    assert ctx.ids == list(obs["text_vec"])  # the context the agent itself reads
    seq = ctx.ids + [agent.special.speaker1] + ids
    types = ctx.types + [ctx.reply_type] * (1 + len(ids))
    with torch.no_grad():
        logits, _ = agent.model.double_heads(torch.tensor([seq]), torch.tensor([types]))
        direct = torch.log_softmax(agent.model.output(logits[0]).float(), -1)
    for j, entry in enumerate(content):
        row = direct[len(ctx.ids) + j]  # the step that chose reply token j
        assert entry.logprob == pytest.approx(row[ids[j]].item(), abs=1e-4)
        assert ids[j] == int(row.argmax())  # greedy
        top = [(int(t.token.removeprefix("token_id:")), t.logprob) for t in entry.top_logprobs]
        assert [lp for _, lp in top] == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)
        assert [lp for _, lp in top] == pytest.approx([row[t].item() for t, _ in top], abs=1e-4)
    chunks = list(client.chat.completions.create(model=model, messages=chat(PERSONA, utterances), temperature=0,
                                                 max_tokens=8, logprobs=True, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in content], abs=1e-5)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert b"".join(bytes(e.bytes) for e in streamed).decode() == text == whole.choices[0].message.content
    assert all(e.top_logprobs == [] for e in streamed)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=chat(PERSONA, utterances), logprobs=True,
                                       extra_body={"inference": "beam", "beam_size": 3})
    assert err.value.body["param"] == "logprobs"


def test_tokenize_and_detokenize_in_vllms_shape(client, server, agent):
    import httpx2

    model = client.models.list().data[0].id
    text = "hi there , do you like cats ?"
    got = httpx2.post(server.url + "/tokenize", json={"model": model, "prompt": text, "return_token_strs": True}).json()
    assert got["tokens"] == agent.dict.txt2vec(text) and got["count"] == len(got["tokens"])
    assert got["max_model_len"] == 1024 and "".join(got["token_strs"]) == text
    assert httpx2.post(server.url + "/detokenize", json={"model": model, "tokens": got["tokens"]}).json() == {"prompt": text}
    context = httpx2.post(server.url + "/tokenize", json={"messages": chat(PERSONA, ["hi"])}).json()
    reply = client.chat.completions.create(model=model, messages=chat(PERSONA, ["hi"]), temperature=0, max_tokens=1)
    assert context["count"] == reply.usage.prompt_tokens and context["tokens"][-1] == agent.special.speaker1
    for path, body, param in [("/detokenize", {"tokens": [5, -1]}, "tokens.1"), ("/detokenize", {"tokens": ["5"]}, "tokens.0"),
                              ("/tokenize", {"prompt": "hi", "messages": chat(PERSONA, ["hi"])}, "prompt"),
                              ("/tokenize", {"prompt": "\ud800"}, "prompt")]:
        response = httpx2.post(server.url + path, content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_cors_lets_the_given_origins_call_the_api_from_a_browser(browser, server):
    """--cors-origins: a page of an allowed origin may call the API from Chromium (its
    preflight passes, Private Network Access's included: the server is on this machine);
    any other origin's page may not: the browser withholds the answer."""
    context = browser.new_context(permissions=["local-network-access"])  # the user's consent
    page = context.new_page()
    for origin in ("https://allowed.example", "https://elsewhere.example"):
        page.route(origin + "/", lambda route: route.fulfill(body="<html><body>a page</body></html>",
                                                             content_type="text/html"))
    call = """async (url) => { try {
        const r = await fetch(url + '/v1/chat/completions', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer unused'},
            body: JSON.stringify({model: 'mf/model', temperature: 0, max_tokens: 2,
                                  messages: [{role: 'user', content: 'hi'}]})});
        return (await r.json()).usage.completion_tokens; } catch (e) { return e.name; } }"""
    try:
        page.goto("https://allowed.example/")
        assert page.evaluate(call, server.url) == 2
        page.goto("https://elsewhere.example/")
        assert page.evaluate(call, server.url) == "TypeError"  # blocked by CORS
    finally:
        context.close()


def test_new_sessions_are_limited_per_client(server):
    """--session-rate-limit 30 a minute for each client address; behind a trusted proxy
    (--forwarded-allow-ips) the address is the one X-Forwarded-For names."""
    import httpx2

    api = server.url + "/api/sessions"
    one, other = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "203.0.113.8"}
    assert [http_json("POST", api, headers=one)[0] for _ in range(30)] == [200] * 30
    refused = httpx2.post(api, headers=one)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 2
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "203.0.113.7" in refused.json()["error"]["message"] and "--session-rate-limit" in refused.json()["error"]["message"]
    assert http_json("POST", api, headers=other)[0] == 200  # another client is not held back


# --------------------------------------------------------------------------- the page
def open_page(browser, server, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_selector("#persona li")
    return context, page


def persona_of(page):
    return page.locator("#persona li").all_inner_texts()


def messages_of(page):
    return [(li.get_attribute("class").split()[0], li.locator(".text").inner_text())
            for li in page.locator("#messages li").all()]


def send(page, text):
    """Type and send a message; returns the bot's reply once it is complete."""
    bots = page.locator("#messages li.bot").count()
    page.fill("#input", text)
    page.click("#send")
    return wait_reply(page, bots)


def wait_reply(page, bots_before):
    page.wait_for_function("n => document.querySelectorAll('#messages li.bot .meta').length > n",
                           arg=bots_before, timeout=60000)
    return page.locator("#messages li.bot").nth(bots_before)


def session_of(page, server):
    return http_json("GET", f"{server.url}/api/sessions/{page.evaluate('sessionStorage.getItem(`tt-session`)')}")[1]


def test_the_chat_page_in_a_real_browser(browser, server, tmp_path):
    context, page = open_page(browser, server, viewport={"width": 1100, "height": 800})
    try:
        assert persona_of(page) == DEFAULT_PERSONA
        # the reply streams into the page: record every text the bot's bubble shows
        page.evaluate("""() => { window.seen = []; new MutationObserver(() => {
            const t = document.querySelector('#messages li.bot.pending .text');
            if (t) window.seen.push(t.textContent); }).observe(document.querySelector('#messages'),
            {subtree: true, childList: true, characterData: true}); }""")
        reply = send(page, "hi! how are you today?")
        text = reply.locator(".text").inner_text()
        assert text.strip() and " s · " in reply.locator(".meta").inner_text()
        assert any(0 < len(seen) < len(text) and text.startswith(seen) for seen in page.evaluate("window.seen"))
        # suggestions: three replies written as the user; one click sends one
        page.wait_for_function("document.querySelectorAll('#suggestions button.suggestion').length === 3")
        suggestion = page.locator("#suggestions button.suggestion").first.inner_text()
        page.locator("#suggestions button.suggestion").first.click()
        wait_reply(page, 1)
        assert messages_of(page)[2] == ("user", suggestion)
        assert [role for role, _ in messages_of(page)] == ["user", "bot", "user", "bot"]
        # settings apply to this session
        page.click("#settings summary")
        page.select_option("select[name=inference]", "greedy")
        page.wait_for_function("document.querySelector('#status').textContent === ''")
        assert session_of(page, server)["settings"]["inference"] == "greedy"
        page.click("#undo")
        page.wait_for_function("document.querySelectorAll('#messages li').length === 2")
        page.screenshot(path=str(tmp_path / "chat.png"))
        assert os.path.getsize(tmp_path / "chat.png") > 10000
        # a new persona starts a new conversation; reset clears it and keeps the persona
        page.click("#new-persona")
        page.wait_for_function("document.querySelectorAll('#messages li').length === 0")
        persona = persona_of(page)
        assert persona != DEFAULT_PERSONA and persona == session_of(page, server)["persona"]
        send(page, "what do you do?")
        page.click("#reset")
        page.wait_for_function("document.querySelectorAll('#messages li').length === 0")
        assert persona_of(page) == persona and session_of(page, server)["history"] == []
        # every file the page loaded came from the server itself (no CDN)
        assert page.requested and all(url.startswith(server.url) for url in page.requested)
    finally:
        context.close()


def test_two_browsers_chat_at_once_and_never_see_each_other(browser, server):
    pages = []
    try:
        for persona in (["i am a pilot.", "i fly planes."], ["i am a baker.", "i love bread."]):
            context, page = open_page(browser, server)
            page.click("#edit-persona")
            page.fill("#persona-edit", "\n".join(persona))
            page.click("#save-persona")
            page.wait_for_function("p => document.querySelector('#persona li').textContent === p", arg=persona[0])
            pages.append((context, page))
        for (_, page), text in zip(pages, ["hello from the cockpit", "hello from the bakery"]):
            page.fill("#input", text)
            page.click("#send")  # both replies are generated together
        for _, page in pages:
            wait_reply(page, 0)
        (_, pilot), (_, baker) = pages
        assert [t for _, t in messages_of(pilot)][0] == "hello from the cockpit"
        assert [t for _, t in messages_of(baker)][0] == "hello from the bakery"
        assert "bakery" not in pilot.content() and "cockpit" not in baker.content()
        assert session_of(pilot, server)["persona"] == ["i am a pilot.", "i fly planes."]
        assert [t["text"] for t in session_of(baker, server)["history"]][0] == "hello from the bakery"
    finally:
        for context, _ in pages:
            context.close()


def test_the_page_fits_a_phone(browser, server):
    context, page = open_page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True)
    try:
        assert send(page, "hi").locator(".text").inner_text().strip()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for selector in ("#input", "#send", "#new-persona"):
            box = page.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    finally:
        context.close()
