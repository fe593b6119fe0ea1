"""ACUTE-Eval end to end: two real tiny transfertransfo models self-chat through `parlai
self_chat`, the real launch command serves the comparisons with Mephisto's local architect
and mock provider, headless Chromium (Debian's) plays the workers (one fails onboarding and
is blocked, one passes it and judges every comparison), then `parlai acute_eval_results`
must report exactly the choices made.  Never skipped: a missing Chromium fails it."""
import csv
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import PARLAI, REPO, free_port
from crowd_helpers import descendants, processes_in, stop_if_running, wait_until

LAUNCH = [sys.executable, "-m", "parlai_transfertransfo.crowdsourcing.acute_eval"]
CHATS = 2  # conversations per model, each judged once per question


def parlai(*args):
    return subprocess.Popen([PARLAI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, what):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what}: {out[-3000:]}"


@pytest.fixture(scope="module")
def selfchats(tmp_path_factory, tiny_transfertransfo_model):
    """The self-chat log of a real transfertransfo model: the session's tiny GPT-2 model
    file, fine-tuned with the recipe (the second model is self-chatted by the launch)."""
    root = tmp_path_factory.mktemp("acute")
    finish(parlai("self_chat", "-t", "convai2", "--num-self-chats", CHATS, "-bs", CHATS, "--selfchat-max-turns", 3,
                  "--inference", "greedy", "--datapath", root / "data", "-mf", tiny_transfertransfo_model,
                  "--outfile", root / "gpt2"), "self-chat of the GPT-2 model")
    return root, {"tt_gpt2": str(root / "gpt2"), "tt_gpt2_again": str(root / "gpt2.jsonl")}


def overrides(data_dir, logs, *extra):
    listed = ",".join(f"{name}:{path}" for name, path in logs.items())
    return [f"mephisto_data_dir={data_dir}", f"mephisto.blueprint.selfchat_logs=[{listed}]", *extra]


def test_pairings_are_balanced_over_conversations_and_sides():
    from parlai_transfertransfo.crowdsourcing.acute_eval.pairings import make_pairings

    questions = ["engagingness", "humanness", "interestingness"]
    pairings = make_pairings({"a": [None] * 7, "b": [None] * 5}, [("a", "b")], questions, 5, seed=3)
    assert len(pairings) == 15 and [p["pair_id"] for p in pairings] == list(range(15))
    for question in questions:
        mine = [p for p in pairings if p["question"] == question]
        for model in "ab":  # within a question, a conversation is never shown twice
            used = [p[s]["conversation"] for p in mine for s in ("left", "right") if p[s]["model"] == model]
            assert len(used) == len(set(used)) == 5
        assert abs(sum(p["left"]["model"] == "a" for p in mine) - 2.5) == 0.5
    uses = Counter((p[s]["model"], p[s]["conversation"]) for p in pairings for s in ("left", "right"))
    assert sorted(v for (m, _), v in uses.items() if m == "b") == [3] * 5  # 15 uses over 5
    assert sorted(v for (m, _), v in uses.items() if m == "a") == [2, 2, 2, 2, 2, 2, 3]  # 15 over 7
    # over the questions, each model on the left as often as the other (the odd one alternates)
    assert Counter(p["left"]["model"] for p in pairings)["a"] in (7, 8)
    assert make_pairings({"a": [None] * 7, "b": [None] * 5}, [("a", "b")], questions, 5, seed=3) == pairings


def test_judgments_needed_for_a_win_rate_give_the_binomial_test_its_power():
    from scipy import stats

    from parlai_transfertransfo.crowdsourcing.stats import judgments_for_win_rate

    def power(n, win_rate):  # the chance that binomtest finds p < 0.05, summed exactly
        return sum(stats.binom.pmf(k, n, win_rate) for k in range(n + 1) if stats.binomtest(k, n).pvalue < 0.05)

    for win_rate, expected in ((0.6, 199), (0.7, 49), (0.3, 49)):
        n = judgments_for_win_rate(win_rate)
        assert n == expected and power(n, win_rate) >= 0.8 > power(n - 1, win_rate)


def test_bad_input_fails_in_one_line_before_anything_starts(tmp_path, selfchats, monkeypatch):
    from parlai_transfertransfo.crowdsourcing.acute_eval import run
    from parlai_transfertransfo.crowdsourcing.launch import CrowdError

    root, logs = selfchats
    broken = tmp_path / "broken.jsonl"
    good = open(logs["tt_gpt2_again"]).readline()
    broken.write_text(good + '{"dialog": [[{"id": "a", "text": "hi"}]\n')
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"dialog": [[{"id": "a"}]]}\n')
    data = tmp_path / "mephisto"
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"ghost": {"model_file": "/nowhere/model"}}))
    cases = {
        "a missing log": (
            {**logs, "tt_gpt2_again": str(tmp_path / "nowhere")}, [],
            f"self-chat log {tmp_path / 'nowhere'} does not exist (make one with `parlai self_chat ... --outfile F`)",
        ),
        "a malformed log": (
            {**logs, "tt_gpt2_again": str(broken)}, [],
            f"self-chat log {broken}, line 2: not JSON (Expecting ',' delimiter, column 41)",
        ),
        "an utterance without text": (
            {**logs, "tt_gpt2_again": str(no_text)}, [],
            f'self-chat log {no_text}, line 1: turn 1 has an utterance without an "id" and a "text"',
        ),
        "a model without a log": (
            logs, ["mephisto.blueprint.model_pairs=[tt_gpt2:zoo]"],
            "model pair 'tt_gpt2:zoo': no self-chat log for model 'zoo' (selfchat_logs names: tt_gpt2, tt_gpt2_again)",
        ),
        "too few conversations": (
            logs, ["mephisto.blueprint.pairs_per_question=3"],
            "model 'tt_gpt2' has 2 conversation(s) in its self-chat log, fewer than pairs_per_question=3: "
            "self-chat more (--num-self-chats) or ask for fewer pairs",
        ),
        "a model to self-chat that does not exist": (
            logs, [f"mephisto.blueprint.selfchat_models={models}"], "model file /nowhere/model does not exist",
        ),
        "an unknown question": (
            logs, ["mephisto.blueprint.questions=[wit]"],
            "unknown question key 'wit' (choose from: engagingness, humanness, interestingness, knowledgeable)",
        ),
    }
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    cases["MTurk without credentials"] = (
        logs, ["mephisto/provider=mturk_sandbox", "mephisto.provider.requester_name=me_sandbox"],
        "no AWS credentials for MTurk requester 'me_sandbox': add a [me] profile with "
        "aws_access_key_id and aws_secret_access_key to ~/.aws/credentials",
    )
    for what, (given, extra, message) in cases.items():
        with pytest.raises(CrowdError) as err:
            run.main(overrides(data, given, f"mephisto.architect.port={free_port()}", *extra))
        assert str(err.value) == message, what
    assert not data.exists()  # nothing started: not even the run's database
    # the real command: that one line on stderr, exit status 1
    proc = subprocess.run(
        [*LAUNCH, *overrides(data, logs, f"mephisto.architect.port={free_port()}", "mephisto.blueprint.questions=[wit]")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [cases["an unknown question"][2]]


def judge(page, choose, reason_for):
    """Answer every comparison the page shows: choose(comparison id, index) -> 1 or 2."""
    made = []
    while True:
        page.wait_for_selector("#comparison #next:not([disabled])", timeout=60000)
        index = int(page.get_attribute("#comparison", "data-index"))
        cid = page.get_attribute("#comparison", "data-comparison-id")
        choice = choose(cid, index)
        page.check(f"input[name=choice][value='{choice}']")
        page.fill("#reason", reason_for(index))
        last = page.inner_text("#next") == "Submit"
        page.click("#next")
        made.append((index, cid, choice))
        if last:
            return made
        page.wait_for_function(f"document.querySelector('#comparison').dataset.index == '{index + 1}'", timeout=60000)


def test_workers_in_chromium_judge_and_the_results_report_exactly_their_choices(
    tmp_path, selfchats, tiny_llama_dir, browser
):
    """One command from a log and a model: the launch self-chats the un-fine-tuned tiny Llama
    backbone (`-m transfertransfo --model-name DIR`, as README's SmolLM2 backbone) first."""
    from parlai_transfertransfo.crowdsourcing.acute_eval.questions import ONBOARDING

    root, logs = selfchats
    data, port = tmp_path / "mephisto", free_port()
    log_path, models = tmp_path / "launch.log", tmp_path / "models.json"
    backbone = {"model": "transfertransfo", "model_name": tiny_llama_dir, "inference": "greedy",
                "label_truncate": 8, "datapath": str(root / "data")}
    models.write_text(json.dumps({"llama_backbone": backbone}))
    args = overrides(
        data, {"tt_gpt2": logs["tt_gpt2"]}, "mephisto/architect=local", "mephisto/provider=mock",
        f"mephisto.architect.port={port}", "mephisto.blueprint.questions=[engagingness,humanness]",
        f"mephisto.blueprint.subtasks_per_unit={2 * CHATS}", f"mephisto.blueprint.selfchat_models={models}",
        f"mephisto.blueprint.selfchat_count={CHATS}", "mephisto.blueprint.selfchat_max_turns=3",
    )
    with open(log_path, "w") as log:
        launch = subprocess.Popen([*LAUNCH, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    answers = {c["id"]: ("left", "right").index(c["answer"]) + 1 for c in json.load(open(ONBOARDING))["comparisons"]}
    context = browser.new_context()
    try:
        def ready():
            assert launch.poll() is None, log_path.read_text()[-3000:]
            return "workers' page: " in log_path.read_text()

        wait_until(ready, 240, "the task page")
        # bob gets the practice comparisons wrong: blocked, he never sees a real one
        bob = context.new_page()
        bob.goto(f"http://localhost:{port}/?worker_id=bob&assignment_id=b1")
        judge(bob, lambda cid, i: 3 - answers[cid], lambda i: "no idea at all")
        bob.wait_for_selector("#blocked", timeout=60000)
        assert "the practice comparisons were not answered right" in bob.inner_text("#blocked")
        # ann reads them right, then judges every comparison with a reason
        ann = context.new_page()
        ann.goto(f"http://localhost:{port}/?worker_id=ann&assignment_id=a1")
        ann.wait_for_selector("#onboarding-intro", timeout=60000)
        ann.fill("#reason", "")
        ann.check("input[name=choice][value='1']")
        ann.click("#next")  # an empty reason is refused
        assert ann.inner_text("#comparison-error") == "Please say why in at least 3 words: your reason has 0."
        onboarding = judge(ann, lambda cid, i: answers[cid], lambda i: "the other one repeats itself")
        assert sorted(cid for _, cid, _ in onboarding) == sorted(answers)
        ann.wait_for_selector("#comparison[data-onboarding=no]", timeout=60000)
        choices = [1, 2, 2, 1]
        made = judge(ann, lambda cid, i: choices[i], lambda i: f"reason number {i} for this one")
        ann.wait_for_selector("#submitted", timeout=60000)
        assert launch.wait(120) == 0, log_path.read_text()[-3000:]
    finally:
        context.close()
        stop_if_running(launch)
    assert not descendants(launch.pid) and not processes_in(data)
    made_log = data / "acute_eval" / "selfchats" / "llama_backbone.jsonl"
    assert f"model llama_backbone: {CHATS} self-chats" in log_path.read_text()
    assert len(made_log.read_text().splitlines()) == CHATS

    # what was judged: every pairing once, the sides and conversations as the pairings said
    folder = data / "acute_eval"
    pairings = {p["pair_id"]: p for p in map(json.loads, open(folder / "pairings.jsonl"))}
    assert len(made) == len(pairings) == 2 * CHATS
    assert sorted(int(cid) for _, cid, _ in made) == sorted(pairings)
    expected = Counter()
    for index, cid, choice in made:
        p = pairings[int(cid)]
        winner = p["left" if choice == 1 else "right"]["model"]
        expected[(p["question"], winner)] += 1
    onboarded = [json.loads(line) for line in open(folder / "onboarding.jsonl")]
    assert [(o["worker"], o["right"], o["passed"]) for o in onboarded] == [("bob_sandbox", 0, False), ("ann_sandbox", 2, True)]

    out = tmp_path / "results"
    proc = subprocess.run(
        [PARLAI, "acute_eval_results", "--results-folder", str(folder), "--output-folder", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith("| engagingness") or line.startswith("| humanness")]
    assert len(rows) == 4, proc.stdout
    for question, model, other, wins, n, rate, p in rows:
        assert (other, n) == ({"tt_gpt2": "llama_backbone", "llama_backbone": "tt_gpt2"}[model], str(CHATS))
        assert int(wins) == expected[(question, model)], (rows, made)
        assert rate.startswith(f"{100 * int(wins) // CHATS}% [")
        assert p == ("1.000" if int(wins) == 1 else "0.500")  # exact binomial test, n=2
    assert {"results.md", "results.csv", "win_rates.png", "reasons.csv"} <= set(os.listdir(out))
    reasons = list(csv.DictReader(open(out / "reasons.csv")))
    assert sorted(r["reason"] for r in reasons) == [f"reason number {i} for this one" for i in range(4)]
    assert all(r["worker"] == "ann_sandbox" for r in reasons)


def test_results_of_a_missing_or_bad_judgments_file_fail_in_one_line(tmp_path):
    from parlai_transfertransfo.crowdsourcing.acute_eval.analysis import compile_results
    from parlai_transfertransfo.errors import TransfertransfoError

    judgments = tmp_path / "judgments.jsonl"
    good = {"question": "humanness", "winner": "a", "loser": "b", "reason": "it makes sense"}
    for text, message in (
        (None, f"{judgments}: no such file (the launcher writes judgments.jsonl in its results folder)"),
        ("", f"{judgments}: no judgments yet"),
        (json.dumps(good) + "\n{oops\n", f"{judgments}:2: not a JSON object"),
        (json.dumps({**good, "winner": None}) + "\n", f"{judgments}:1: not a judgment (no question/winner/loser)"),
    ):
        if text is not None:
            judgments.write_text(text)
        with pytest.raises(TransfertransfoError) as err:
            compile_results(str(tmp_path), str(tmp_path / "out"))
        assert err.value.message == message
