"""The live-chat human evaluation, browser tier: the real launch command with Mephisto's
local architect and mock provider, a real headless Chromium as the worker, a real tiny
transfertransfo model, then the real results command.  Never skipped: a missing Chromium
fails it (conftest's `browser` fixture)."""
import os
import re
import signal
import subprocess
import sys

from conftest import PARLAI, REPO, free_port
from crowd_helpers import descendants, processes_in, saved_conversations, stop_if_running, wait_until

LAUNCH = [sys.executable, "-m", "parlai_transfertransfo.crowdsourcing.model_chat"]
NUM_TURNS = 3


def start(args, log_path):
    log = open(log_path, "a")
    proc = subprocess.Popen([*LAUNCH, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return proc


def wait_for_page(proc, log_path, runs_before):
    def ready():
        assert proc.poll() is None, open(log_path).read()[-3000:]
        return open(log_path).read().count("workers' page: ") > runs_before

    wait_until(ready, 240, "the task page")


def test_a_worker_in_chromium_chats_and_the_results_report_exactly_their_ratings(
    tmp_path, tiny_transfertransfo_model, browser
):
    data, log_path, port = tmp_path / "mephisto", tmp_path / "launch.log", free_port()
    args = [
        f"mephisto_data_dir={data}",
        f"mephisto.blueprint.model_file={tiny_transfertransfo_model}",
        "mephisto/architect=local",
        "mephisto/provider=mock",
        f"mephisto.architect.port={port}",
        "mephisto.blueprint.conversations_per_model=1",
        f"mephisto.blueprint.num_turns={NUM_TURNS}",
    ]
    # 1. a launch killed with SIGKILL while it serves the page leaves nothing running ...
    killed = start(args, log_path)
    wait_for_page(killed, log_path, 0)
    started = descendants(killed.pid)
    assert started, "the local architect started no router"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    wait_until(lambda: not [p for p in started if os.path.exists(f"/proc/{p}")], 20, "the orphaned router to stop")
    assert (data / "tmp" / "local_server_1").exists()  # left behind by the unclean stop

    # 2. ... and the same command works again
    launch = start(args, log_path)
    context = browser.new_context()
    try:
        wait_for_page(launch, log_path, 1)
        log = open(log_path).read()
        assert re.search(r"model [\w.-]+: reply latency \d+\.\d\d s \(CPU", log)
        page = context.new_page()
        page.goto(f"http://localhost:{port}/?worker_id=ann&assignment_id=a1")

        # onboarding: the check's right answers
        page.wait_for_selector("#onboarding", timeout=60000)
        page.check("input[name=onboarding-0][value='1']")
        page.check("input[name=onboarding-1][value='2']")
        page.click("#submit-onboarding")

        # the chat: own persona shown; a short message is refused; NUM_TURNS turns each
        page.wait_for_selector("#chat-input", timeout=60000)
        persona = page.inner_text("#worker-persona")
        page.wait_for_selector("#message-text:not([disabled])", timeout=60000)
        page.fill("#message-text", "hi")
        page.click("#send-message")
        assert page.inner_text("#input-error") == "Please write at least 3 words: your message has 1."
        messages = ["hello there, how are you today?", "i love reading books at night", "what do you do for work?"]
        for i, text in enumerate(messages[:NUM_TURNS]):
            page.wait_for_selector("#message-text:not([disabled])", timeout=60000)
            page.fill("#message-text", text)
            page.click("#send-message")
            page.wait_for_function(f"document.querySelectorAll('[data-speaker=partner]').length >= {i + 1}", timeout=60000)
        assert page.inner_text("#turn-counter") == f"Messages sent: {NUM_TURNS} of {NUM_TURNS}"

        # the final questions
        page.wait_for_selector("#final-questions", timeout=60000)
        page.click("#submit-final")
        assert page.inner_text("#final-error") == "Please answer every question."
        page.check("input[name=rating-engagingness][value='3']")
        page.check("input[name=rating-fluency][value='2']")
        page.check("input[name=rating-consistency][value='5']")
        page.check("input[name=persona-choice][value='1']")
        page.click("#submit-final")
        page.wait_for_selector("#done-pane button", timeout=60000)
        page.click("#done-pane button")
        assert launch.wait(120) == 0, open(log_path).read()[-3000:]
    finally:
        context.close()
        stop_if_running(launch)
    # every process the run started is gone: the launcher, its router, nothing in its folder
    assert not descendants(launch.pid) and not processes_in(data)

    record = saved_conversations(data / "model_chat")[0]
    assert record["status"] == "complete" and record["worker"] == "ann_sandbox"
    assert [turn[0]["text"] for turn in record["dialog"][0::2]] == messages[:NUM_TURNS]
    assert all(line in persona for line in record["worker_persona"])

    # the results command reports exactly the ratings the worker gave
    out = tmp_path / "results"
    run = subprocess.run(
        [PARLAI, "model_chat_results", "--results-folder", str(data / "model_chat"), "--output-folder", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    correct = "100%" if record["bot_persona_index"] == 1 else "0%"
    row = [line for line in run.stdout.splitlines() if line.startswith("| tiny-transfertransfo")]
    assert len(row) == 1, run.stdout
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[1:6] == ["1", "0", "3.00", "2.00", "5.00"]
    assert cells[6].startswith(correct + " [")
    assert {"results.md", "results.csv", "ratings.png"} <= set(os.listdir(out))
