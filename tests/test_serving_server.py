"""`parlai serve_transfertransfo` as users run it: a real server process, the official
`openai` client, and the chat page in headless Chromium (Playwright).

One server (conftest.serving_server, shared with test_serving_api.py: a tiny random GPT-2
with 1024 positions and GPT-2's real tokenizer, saved as a ParlAI model file); greedy
replies are checked against the agent's own `act` on the same model file.
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

from parlai_transfertransfo.data.personas import DEFAULT_PERSONA
from serving_helpers import (
    PARLAI, PERSONA, agent_reply, chat, http_json, make_agent, metrics, one_thread, shared_model_file,
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return shared_model_file(tmp_path_factory)


@pytest.fixture(scope="module")
def server(serving_server):
    return serving_server


@pytest.fixture(scope="module")
def agent(model_file):
    with one_thread():
        yield make_agent(model_file, "--inference", "greedy")


@pytest.fixture(scope="module")
def client(serving_server):
    return openai.OpenAI(base_url=serving_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


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
        with page.expect_response(lambda r: r.request.method == "PATCH"):  # the edit has landed
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
