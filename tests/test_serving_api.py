"""Serving, round 2 (issue 22): one request never harms another, strict OpenAI types,
sessions a flood cannot evict, a readable 413, and what users of vLLM, llama.cpp's server
and TGI expect (/health, /metrics, /v1/completions, logprobs, /tokenize, /detokenize,
CORS), each through a real client: the official `openai` client, its HTTP library httpx2,
urllib, prometheus-client's parser, Chromium.

The server is conftest.serving_server, shared with test_serving_server.py.
"""
import concurrent.futures
import json
import threading
import time
import urllib.request

import httpx2
import openai
import pytest
import torch

from parlai_transfertransfo.data.personas import persona_text
from serving_helpers import PERSONA, agent_reply, chat, http_json, make_agent, metrics, one_thread, shared_model_file


@pytest.fixture(scope="module")
def server(serving_server):
    return serving_server


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    with one_thread():
        yield make_agent(shared_model_file(tmp_path_factory), "--inference", "greedy")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


# --------------------------------------------------------------------------- isolation
ISOLATION_TOKENS = 200


def test_no_request_harms_another(client, server):
    """8 greedy streams run; in the middle of them, one request of each kind that used to
    fail every request decoding beside it (issue 22), through the API and the page's session
    API, and every bad input named there. Each gets its own answer (a 400 naming the field,
    or a reply), and each of the 8 streams ends with exactly the text it gives alone."""
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
    """A 10 MB body: its 413 reaches the client (urllib, which used to get a reset
    connection; httpx2, the official client's own HTTP library; the official client)."""
    big = {"model": model, "messages": [{"role": "user", "content": "x" * 10_000_000}]}
    status, body = http_json("POST", server.url + "/v1/chat/completions", json.dumps(big).encode())
    assert status == 413 and body["error"]["message"].startswith("request body too large")
    response = httpx2.post(server.url + "/v1/chat/completions", json=big, timeout=120)
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["error"]["message"]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=model, messages=big["messages"])
    assert err.value.status_code == 413 and "request body too large" in err.value.message


def scrape(server):
    """/metrics under full load: every family there, the 8 streams in its batch rows."""
    got = metrics(server)
    assert got[("transfertransfo_batch_rows",)] >= 8
    names = {key[0] for key in got}
    assert {"transfertransfo_http_requests_total", "transfertransfo_generations_total",
            "transfertransfo_queued_requests", "transfertransfo_time_to_first_token_seconds_bucket",
            "transfertransfo_request_latency_seconds_count", "transfertransfo_page_sessions",
            "transfertransfo_prompt_tokens_total", "transfertransfo_generation_tokens_total"} <= names


# ------------------------------------------------ what users of inference servers expect
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
    """--session-rate-limit 30 a minute for each client address (a burst of 30, then one
    every 2 s); behind a trusted proxy (--forwarded-allow-ips) the address is the one
    X-Forwarded-For names."""
    api = server.url + "/api/sessions"
    one, other = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "203.0.113.8"}
    start, created = time.monotonic(), 0
    while (refused := httpx2.post(api, headers=one)).status_code == 200 and created < 100:
        created += 1
    assert 30 <= created <= 30 + (time.monotonic() - start) / 2 + 1  # the burst, and what refilled
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 2
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "203.0.113.7" in refused.json()["error"]["message"] and "--session-rate-limit" in refused.json()["error"]["message"]
    assert http_json("POST", api, headers=other)[0] == 200  # another client is not held back
