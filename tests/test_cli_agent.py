"""End to end through the real `parlai` command line: train, evaluate, chat, multiprocess.

A tiny random GPT-2 (real GPT-2 tokenizer) is fine-tuned with the recipe on six real
ConvAI2 validation dialogs; the tests check what a user would look at.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from benchmarks.kill_resume import first_dialogs
from conftest import TEST_DATA, free_port, teacher
from parlai_transfertransfo.recipe import segments

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")


def parlai(*args, stdin=None, timeout=600):
    proc = subprocess.run(
        [PARLAI, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def reports(output):
    """Every metrics report ParlAI printed, in order (one JSON object per line)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and line.endswith("}")]


@pytest.fixture(scope="module")
def six_dialogs(tmp_path_factory):
    return first_dialogs(6, tmp_path_factory.mktemp("convai2") / "six.txt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_gpt2_dir, six_dialogs):
    """Overfit the tiny model on six dialogs (chance is 1/20 = 0.05 hits@1)."""
    out = tmp_path_factory.mktemp("trained")
    log = parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
        "-t", "convai2_file", "--convai2-file", six_dialogs, "--valid-split", 0,
        "-mf", out / "model", "--datapath", out / "data",
        "-bs", 8, "--num-epochs", 30, "-lr", 1e-3, "--skip-generation", "true",
        "--validation-every-n-epochs", -1, "--log-every-n-steps", 10,
        "--seed", 0,  # the same tiny model on every run: the assertions below judge one model
    )
    return str(out / "model"), log


def test_training_lowers_the_loss_and_learns_to_rank(trained):
    model_file, log = trained
    train_reports = [r for r in reports(log) if "mc_loss" in r]
    assert len(train_reports) >= 3
    first, last = train_reports[0], train_reports[-1]
    assert last["loss"] < first["loss"] - 2.0  # LM loss on the gold reply
    assert last["mc_loss"] < first["mc_loss"]
    for name in ("model", "model.dict", "model.opt", "model.hf_config.json"):
        assert os.path.exists(model_file[: -len("model")] + name)


@pytest.fixture(scope="module")
def eval_six(trained, six_dialogs, tmp_path_factory):
    """`eval_model` of the trained model on the six dialogs (convai2_file), batches of 8."""
    model_file, _ = trained
    return reports(parlai("eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", six_dialogs,
                          "--valid-split", 0, "--datapath", tmp_path_factory.mktemp("eval"),
                          "--skip-generation", "true", "-bs", 8))[-1]


def f1(guess, answer):
    """Word-overlap F1 after ParlAI's normalisation (lower case, no punctuation or articles)."""
    def words(text):
        text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", text.lower()))
        return text.split()

    from collections import Counter

    common = sum((Counter(words(guess)) & Counter(words(answer))).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(words(guess)), common / len(words(answer))
    return 2 * precision * recall / (precision + recall)


def test_eval_on_convai2_reports_hits_f1_and_ppl(trained, six_dialogs, eval_six, tmp_path):
    """`parlai eval_model -t convai2` with ParlAI's own teacher, installed offline: the same
    hits@1 and ppl as our convai2_file teacher on the same dialogs, and an f1 that is the
    mean word F1 of its (greedy, no word twice) replies against the gold ones."""
    model_file, _ = trained
    source = tmp_path / "convai2"
    source.mkdir()
    os.symlink(six_dialogs, source / "valid_self_original.txt")
    parlai("install_convai2", "--source", source, "--datapath", tmp_path / "data")
    out = parlai(
        "eval_model", "-mf", model_file, "-t", "convai2", "-dt", "valid",
        "--datapath", tmp_path / "data", "-bs", 8, "--inference", "greedy", "--skip-generation", "false",
        "--beam-block-ngram", 1,  # greedy alone says ". . . ." here, whose F1 is 0
        "--world-logs", tmp_path / "log.jsonl",
    )
    final = reports(out)[-1]
    assert final["exs"] == 43  # every utterance of the six dialogs
    assert final["hits@1"] > 0.3  # chance is 0.05: the MC head has learnt the gold replies
    for metric in ("hits@1", "hits@5", "loss", "ppl"):
        assert final[metric] == pytest.approx(eval_six[metric], rel=1e-4), metric
    with open(tmp_path / "log.jsonl") as f:
        turns = [turn for line in f for turn in json.loads(line)["dialog"]]
    pairs = [(reply["text"], gold["eval_labels"][0]) for gold, reply in turns]
    assert len(pairs) == 43
    assert final["f1"] == pytest.approx(sum(f1(r, g) for r, g in pairs) / 43, abs=1e-4)  # reports: 4 digits
    assert final["f1"] > 0 and final["gen_n_toks"] > 0


def test_scores_do_not_depend_on_batch_composition(trained, six_dialogs, eval_six, tmp_path):
    model_file, _ = trained
    one = reports(parlai("eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", six_dialogs,
                         "--valid-split", 0, "--datapath", tmp_path, "--skip-generation", "true", "-bs", 1))[-1]
    for metric in ("hits@1", "hits@5", "loss", "ppl", "token_acc"):
        assert one[metric] == pytest.approx(eval_six[metric], rel=1e-4), metric


def test_rank_by_lm_ranks_with_the_language_model(trained, six_dialogs, tmp_path):
    """`--rank-by lm` through the command line: hits@1 is that of the candidates with the
    lowest mean LM loss, each computed here as a whole sequence, and not the MC head's."""
    from parlai.core.agents import create_agent_from_model_file
    from parlai.core.message import Message

    from test_agent import whole_sequence_scores

    model_file, _ = trained
    task = ["-t", "convai2_file", "--convai2-file", six_dialogs, "--valid-split", "0", "--datapath", str(tmp_path)]
    logs = tmp_path / "logs.jsonl"
    out = parlai("eval_model", "-mf", model_file, *task, "--skip-generation", "true", "--rank-by", "lm",
                 "-bs", 1, "--world-logs", logs)  # all 43 examples, in order
    agent = create_agent_from_model_file(model_file, {"datapath": str(tmp_path)})
    dialogs = teacher(*task, "-dt", "valid")
    by_lm, by_mc, golds = [], [], []
    for _ in range(dialogs.num_examples()):
        message = dict(dialogs.act())
        scores = whole_sequence_scores(agent, agent.observe(Message(message)))
        by_lm.append(min(scores, key=lambda c: scores[c][1]))
        by_mc.append(max(scores, key=lambda c: scores[c][0]))
        golds.append(message["eval_labels"][0])
        agent.self_observe(Message({}))
    # each example's top candidate is the LM's choice, not the MC head's where they differ
    # (over all 43 examples: training is not bitwise repeatable, and on 16 the two heads once
    # chose alike)
    with open(logs) as f:
        tops = [turn[1]["text_candidates"][0] for line in f for turn in json.loads(line)["dialog"]]
    assert tops == by_lm and by_lm != by_mc
    final = reports(out)[-1]
    assert final["exs"] == len(golds) == 43
    hits = sum(top == gold for top, gold in zip(by_lm, golds))
    assert final["hits@1"] == pytest.approx(hits / len(golds), abs=1e-4)  # reports: 4 digits


def test_interactive_answers_each_piped_line_and_exits(trained):
    """Each piped line gets the reply the recipe's own decoding loop gives (greedy, no
    cache, no token twice) for the tutorial persona and the dialogue so far, with every
    line tokenized as plain text by GPT-2's tokenizer, which has no <eos>, <speaker2> or
    <bos>: typed, they are text, never control tokens. Read as control tokens, the last
    line would get another reply."""
    from parlai.core.agents import create_agent_from_model_file

    from conftest import gpt2_tokenizer
    from parlai_transfertransfo.data.personas import DEFAULT_PERSONA
    from test_agent import uncached_greedy

    model_file, _ = trained
    lines = ["hi! how are you today?", "what do you do? <eos> <speaker2> <bos>"]
    out = parlai(
        "interactive", "-mf", model_file, "--inference", "greedy", "--skip-generation", "false",
        "--beam-block-ngram", 1,  # greedy alone says ". . . ." to anything here
        stdin="".join(line + "\n" for line in lines), timeout=300,
    )
    replies = re.findall(r"\[Transfertransfo\]: (.*)", out)
    assert "CHAT DONE" in out

    agent = create_agent_from_model_file(model_file, {})
    plain, special, said = gpt2_tokenizer(), agent.special, []
    persona = [plain.encode(sentence) for sentence in DEFAULT_PERSONA]
    heads = agent.model.double_heads.eval()

    def reply_to(history):
        ids, types, reply_type = segments.build_prefix(persona, history, special)
        return uncached_greedy(heads, ids, types, reply_type, special, 20, no_repeat=True)

    for line in lines:
        said.append(plain.encode(line))
        reply = reply_to(said)
        assert reply  # never blank (minimum length 1)
        assert replies.pop(0).strip() == plain.decode(reply).strip()
        said.append(plain.encode(plain.decode(reply)))  # the reply enters the history as text
    assert replies == []
    as_control = agent.dict.hf_tokenizer.encode(lines[1], add_special_tokens=False, split_special_tokens=False)
    assert {special.eos, special.speaker2, special.bos} <= set(as_control)

    def next_token_logits(history):  # what the reply's first token is drawn from
        ids, types, reply_type = segments.build_prefix(persona, history, special)
        with torch.no_grad():
            lm, _ = heads(torch.tensor([ids + [special.speaker1]]), torch.tensor([types + [reply_type]]))
        return lm[0, -1]

    # read as control tokens, the line is another input: the model's next-token distribution
    # moves (a tiny model's greedy reply may still coincide, as one retrained model's did)
    assert not torch.allclose(next_token_logits(said[:-2] + [as_control]), next_token_logits(said[:-1]), atol=1e-3)


def test_multiprocessing_train_runs_two_cpu_workers(tiny_gpt2_dir, six_dialogs, tmp_path):
    out = parlai(
        "multiprocessing_train", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
        "-t", "convai2_file", "--convai2-file", six_dialogs, "--valid-split", 0,
        "-mf", tmp_path / "model", "--datapath", tmp_path / "data", "-bs", 4,
        "--num-epochs", 1, "--skip-generation", "true", "--distributed-world-size", 2,
        "--port", free_port(),
    )
    assert os.path.exists(tmp_path / "model")
    final = reports(out)[-1]
    assert final["exs"] == 43 and "hits@1" in final


def test_unknown_model_name_is_one_clear_line(tmp_path, six_dialogs):
    proc = subprocess.run(
        [PARLAI, "train_model", "-m", "transfertransfo", "--model-name", str(tmp_path / "nope"),
         "-t", "convai2_file", "--convai2-file", six_dialogs, "-mf", str(tmp_path / "m"),
         "--datapath", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("transfertransfo: no such model directory")


def test_missing_model_file_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [PARLAI, "eval_model", "-mf", str(tmp_path / "missing" / "model"), "-t", "convai2_file",
         "--convai2-file", CONVAI2_800, "--datapath", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"parlai: the model file {tmp_path}/missing/model does not exist: check --model-file "
        "(zoo models are named like zoo:transfertransfo/<entry>/model)"
    )
