"""Serving test helpers: a tiny transfertransfo model file, a real server process.

The model is a random GPT-2 (2 layers, 32 dims) with GPT-2's real tokenizer and 1024
positions, saved as a ParlAI model file the way training saves one: `parlai
serve_transfertransfo -mf` loads it like any fine-tuned model.
"""
import asyncio
import concurrent.futures
import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
PERSONA = ["i love cats.", "i have two dogs.", "i work as a nurse."]
# the shared server's options (conftest.serving_server). Its clients come from 127.0.0.1,
# which is also trusted as a proxy: a test that sends X-Forwarded-For is a client of its
# own for the per-client session limit.
SERVER_ARGS = ["--max-tokens-limit", 1000, "--max-message-chars", 20000, "--max-context-tokens", 0,
               "--cors-origins", "https://allowed.example", "--forwarded-allow-ips", "127.0.0.1",
               "--session-rate-limit", 30]


def tiny_model_dir(path):
    """A random GPT-2 double-heads model with 1024 positions (long replies stay cheap)."""
    import torch
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    from conftest import gpt2_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=32, n_layer=2, n_head=2)
    GPT2DoubleHeadsModel(config).save_pretrained(path)
    gpt2_tokenizer().save_pretrained(path)
    return str(path)


def shared_model_file(tmp_path_factory):
    """One tiny model file per pytest run, for every serving test module."""
    folder = tmp_path_factory.getbasetemp() / "serving-tiny-model"
    model_file = folder / "mf" / "model"
    if not (folder / "done").exists():
        folder.mkdir(exist_ok=True)
        (folder / "mf").mkdir(exist_ok=True)
        save_model_file(tiny_model_dir(folder / "backbone"), folder / "mf")
        (folder / "done").touch()
    return str(model_file)


def make_agent(model_file, *args):
    """The agent as `parlai interactive -mf MODEL_FILE` builds it."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    opt = ParlaiParser(True, True).parse_args(["-mf", str(model_file), *map(str, args)])
    opt["interactive_mode"] = True
    return create_agent(opt, requireModelExists=True)


def save_model_file(model_dir, out_dir):
    """A ParlAI model file (+ .opt, .dict, .hf_config.json) of the backbone in model_dir."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    model_file = os.path.join(out_dir, "model")
    opt = ParlaiParser(True, True).parse_args([
        "-m", "transfertransfo", "--model-name", str(model_dir), "-mf", model_file,
        "--datapath", os.path.join(out_dir, "data"),
    ])
    agent = create_agent(opt, requireModelExists=False)
    agent.save(model_file)
    return model_file


class ServerProcess:
    """`parlai serve_transfertransfo` as a user runs it, on a port the OS picks (--port 0).

    Its output goes to a file (a full pipe would block it); `url` is read from the line it
    prints once it listens with the model loaded.
    """

    def __init__(self, model_file, *args, log_path, timeout=180):
        self.log_path = str(log_path)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [PARLAI, "serve_transfertransfo", "-mf", str(model_file), "--port", "0", *map(str, args)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.timeout = timeout
        self._url = None

    @property
    def url(self):
        deadline = time.time() + self.timeout
        while self._url is None:
            found = re.search(r"at (http://\S+)/ \(chat page\)", self.output())
            if found:
                self._url = found.group(1)
            elif self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"the server did not start:\n{self.output()[-3000:]}")
            else:
                time.sleep(0.2)
        return self._url

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def one_thread():
    """Tiny models: torch's second thread only adds waiting on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def agent_reply(agent, utterances, persona=PERSONA):
    """(what `parlai interactive` answers after this dialogue, its context's length)."""
    from parlai_transfertransfo.data.personas import persona_text

    agent.reset()
    obs = agent.observe({"text": persona_text(persona) + "\n" + "\n".join(utterances), "episode_done": False})
    return agent.act()["text"], len(obs["text_vec"])


def chat(persona, utterances):
    """OpenAI messages: the persona as the system message, then user/assistant turns."""
    messages = [{"role": "system", "content": " ".join(persona)}]
    for i, text in enumerate(utterances):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


def metrics(server):
    """/metrics parsed by prometheus-client's own parser: {(sample name, labels...): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.url + "/metrics", timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def http_json(method, url, body=None, headers=None, timeout=60):
    """(status, parsed JSON) of one plain HTTP request (urllib: no client library's help)."""
    import json
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def readme_screenshot(url, path, messages=("hi! how are you today?", "what do you do for a living?")):
    """The README's picture of the page: the same Playwright + Debian Chromium as the
    browser tests, on a running server (README's: the embedded default model).

        .venv/bin/python tests/serving_helpers.py http://127.0.0.1:8080 parlai_transfertransfo/serving/static/screenshot.png
    """
    import shutil

    from playwright.sync_api import sync_playwright

    from conftest import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(url + "/")
        page.wait_for_selector("#persona li")
        for i, text in enumerate(messages):
            page.fill("#input", text)
            page.click("#send")
            page.wait_for_function("n => document.querySelectorAll('#messages li.bot .meta').length > n", arg=i,
                                   timeout=120000)
        page.wait_for_function("document.querySelectorAll('#suggestions button.suggestion').length > 0",
                               timeout=120000)
        page.screenshot(path=path)
        browser.close()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    readme_screenshot(sys.argv[1], sys.argv[2])


def run_in_own_loop(coroutine):
    """asyncio.run in a thread of its own: the session's Playwright browser keeps an event
    loop marked running in the main thread, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
