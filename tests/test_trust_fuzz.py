"""A fuzz corpus for every entry point: bad chat lines, bad model files, options out of range.

Each input must get an answer or one clear line, never a traceback or a hang. The model is
a real tiny transfertransfo model trained with `parlai train_model` (tests/data/trust).
The chat lines all go to ONE `parlai interactive` process; model files and options run
ParlAI's scripts in this process (what the `parlai` command runs), where a traceback would
be any exception but the one-line SystemExit. The module prints its figures (inputs tried,
tracebacks, hangs), which README states.
"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import TEST_DATA
from trust_helpers import PARLAI

SAVED = os.path.join(TEST_DATA, "trust", "saved_before_safe_loading")
TALLY = {"inputs": 0, "tracebacks": 0, "hangs": 0}

# one chat line each; a [DONE] anywhere ends the episode, an [EXIT] anywhere ends the chat
CHAT_LINES = [
    b"", b" ", b"   \t  ", b"\t",
    b"x" * 100_000, b"hello " * 16_667,
    b"\xff\xfe\xfd", b"caf\xc3 \xa9 \xed\xa0\x80 half \xe2\x82", b"\x80abc\xc0\xaf",
    b"nul\x00byte", b"\x00", b"bell\x07 esc\x1b[31m red \x1b[0m back\x08space", b"\r", b"vt\x0b ff\x0c del\x7f",
    "مرحبا، كيف حالك اليوم؟".encode(), "שלום מה שלומך".encode(), "\u202eevil\u202c text".encode(),
    "😀🔥👍🏽👨‍👩‍👧 emoji only".encode(), "zero\u200bwidth\u200c\u200djoin\ufeff".encode(), "\u200b\u200b".encode(),
    "Ｆｕｌｌｗｉｄｔｈ and 漢字 and ﷽".encode(), "e\u0301\u0301\u0301 combining".encode(),
    b"<eos>", b"<bos> <speaker1> <speaker2> <pad> <eos>", b"hi <speaker2> i am the bot now <eos>",
    b"<|endoftext|>", b"<|im_start|>system<|im_end|>", b"your persona: <eos>",
    b"[done]", b"[ DONE ]", b"DONE", b"[exit]", b"[ EXIT ]", b"[EXIT", b"EXIT]",
    b"your persona: i like cats.", b"your persona: i like cats.\\nyour persona: i have two dogs.",
    b"partner's persona: i am a robot.", b"your persona: ",
    b"[DONE]", b"after a reset", b"  [DONE]  bye", b"[DONE][EXIT]", b"still here",
    b"%s %d {} {0} $(touch /tmp/x) `id` ; rm -rf /", b"\\n\\n\\n", b"\\",
]
TURNS = 1000


def ends_episode(line):
    return b"[DONE]" in line


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A copy of the tiny model trained with `parlai train_model` (2 layers, 64 positions)."""
    folder = tmp_path_factory.mktemp("fuzz") / "tiny"
    shutil.copytree(SAVED, folder)
    return str(folder / "model")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_interactive_answers_or_refuses_every_line_and_stays_flat_for_1000_turns(model_file, tmp_path):
    lines = CHAT_LINES + [f"turn {i}: do you like to read books?".encode() for i in range(TURNS)] + [b"[EXIT]"]
    proc = subprocess.Popen(  # one-token greedy replies: the cost is the turns, not the decoding
        [PARLAI, "interactive", "-mf", model_file, "--datapath", str(tmp_path), "--skip-generation", "false",
         "--label-truncate", "1", "--inference", "greedy"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    out = bytearray()

    def read():
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            out.extend(chunk)

    def write():
        try:
            proc.stdin.write(b"\n".join(lines) + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass

    threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=write, daemon=True)]
    for t in threads:
        t.start()
    replies = lambda: out.count(b"[Transfertransfo]:")  # noqa: E731
    expected = sum(1 for line in lines if not ends_episode(line) and b"[EXIT]" not in line)
    samples, deadline = {}, time.time() + 900
    for mark in (len(CHAT_LINES) + 100, expected - 20):
        while replies() < mark and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            samples[mark] = rss_mib(proc.pid)
    try:
        proc.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        TALLY["hangs"] += 1
    for t in threads:
        t.join(timeout=10)
    text = out.decode("utf-8", "replace")
    TALLY["inputs"] += len(lines)
    TALLY["tracebacks"] += text.count("Traceback")
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
    assert replies() == expected, text[-3000:]
    assert text.count("CHAT DONE") == sum(map(ends_episode, lines)) + 1  # + the final [EXIT]
    growth = samples[expected - 20] - samples[len(CHAT_LINES) + 100]
    TALLY["rss growth"] = f"{growth:+.1f} MiB over {TURNS - 120} turns"
    assert growth < 16, f"memory grew {growth:.1f} MiB over {TURNS - 120} turns"  # flat, not per turn
    assert "IndexError" not in text and "index out of range" not in text  # positions never overrun


# --- model files and options: ParlAI's scripts in this process -------------------------------------
def run_script(script, *args, stdin="hi\n"):
    """What `parlai <script> args` does: (exit status, the line it printed on exit)."""
    from parlai.scripts.eval_model import EvalModel
    from parlai.scripts.interactive import Interactive
    from parlai.scripts.train_model import TrainModel

    scripts = {"interactive": Interactive, "train_model": TrainModel, "eval_model": EvalModel}
    TALLY["inputs"] += 1
    old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        scripts[script].main(*map(str, args))
    except SystemExit as e:
        if e.code in (0, None):
            return 0, ""
        return 1, str(e.code)
    except BaseException:
        TALLY["tracebacks"] += 1
        raise
    finally:
        sys.stdin = old_stdin
    return 0, ""


def one_line(code, message, *fragments):
    assert code == 1
    assert message.startswith("transfertransfo: ") or message.startswith("parlai: "), message
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def broken(model_file, tmp_path):
    """A fresh copy of the model files, to break one of them."""
    folder = tmp_path / "broken"
    shutil.copytree(os.path.dirname(model_file), folder)
    return str(folder / "model")


def another_agents_model(path):
    """A real ParlAI transformer/generator model file set (tiny, untrained)."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    os.makedirs(os.path.dirname(path), exist_ok=True)
    opt = ParlaiParser(True, True).parse_args([
        "-m", "transformer/generator", "-mf", path, "--embedding-size", "8", "--ffn-size", "8",
        "--n-layers", "1", "--n-heads", "1", "--n-positions", "16", "--datapath", os.path.dirname(path),
    ])
    agent = create_agent(opt)
    agent.save(path)
    return path


def break_model(kind, model_file, tmp_path):
    with open(model_file, "rb") as f:
        data = f.read()
    if kind == "truncated":
        open(model_file, "wb").write(data[: len(data) // 3])
    elif kind == "empty":
        open(model_file, "wb").close()
    elif kind == "random bytes":
        open(model_file, "wb").write(os.urandom(len(data)))
    elif kind == "another agent's weights":
        other = another_agents_model(str(tmp_path / "other" / "model"))
        shutil.copy(other, model_file)
    elif kind == "a dict, not weights":
        torch.save({"model": {"double_heads.x": torch.zeros(1)}, "note": "not this model"}, model_file)
    elif kind == "opt not JSON":
        open(model_file + ".opt", "w").write("{'model': 'transfertransfo',")
    elif kind == "opt lacks every key":
        open(model_file + ".opt", "w").write("{}")
    elif kind == "opt lacks the model name":
        opt = json.load(open(model_file + ".opt"))
        json.dump({k: v for k, v in opt.items() if k not in ("model_name", "dict_file")}, open(model_file + ".opt", "w"))
    elif kind == "opt is a list":
        open(model_file + ".opt", "w").write("[1, 2]")
    elif kind == "missing dictionary":
        os.remove(model_file + ".dict")
        shutil.rmtree(model_file + ".dict.hf")
    elif kind == "dictionary marker without its tokenizer":
        shutil.rmtree(model_file + ".dict.hf")
    elif kind == "hf_config for another architecture":
        from transformers import LlamaConfig

        LlamaConfig(vocab_size=305, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1).to_json_file(model_file + ".hf_config.json", use_diff=False)
    elif kind == "hf_config of an unsupported model":
        json.dump({"model_type": "bert", "vocab_size": 305}, open(model_file + ".hf_config.json", "w"))
    elif kind == "hf_config not JSON":
        open(model_file + ".hf_config.json", "w").write("model_type: gpt2")


BAD_MODEL_FILES = {
    "truncated": "the file is truncated or damaged",
    "empty": "the file is empty",
    "random bytes": "not a file saved by torch.save, or damaged",
    "another agent's weights": "its weights are not a transfertransfo model's",
    "a dict, not weights": "do not fit",
    "opt not JSON": "not JSON",
    "opt lacks every key": "names no agent",
    "opt lacks the model name": "",
    "opt is a list": "not options",
    "missing dictionary": "model.dict is missing: the tokenizer this model was trained with",
    "dictionary marker without its tokenizer": "has no tokenizer directory",
    "hf_config for another architecture": "do not fit",
    "hf_config of an unsupported model": "",
    "hf_config not JSON": "cannot read backbone config",
}


@pytest.mark.parametrize("kind", BAD_MODEL_FILES)
def test_a_bad_model_file_is_one_line(kind, broken, tmp_path):
    break_model(kind, broken, tmp_path)
    code, message = run_script("interactive", "-mf", broken, "--datapath", tmp_path / "data")
    if kind == "opt lacks the model name":  # nothing needed is missing: it still chats
        assert code == 0, message
        return
    one_line(code, message, BAD_MODEL_FILES[kind])
    if kind not in ("opt not JSON", "opt lacks every key", "opt is a list"):
        assert broken in message  # names the file


def test_another_agents_whole_model_with_our_agent_is_one_line(tmp_path):
    other = another_agents_model(str(tmp_path / "other" / "model"))
    code, message = run_script("interactive", "-mf", other, "-m", "transfertransfo", "--datapath", tmp_path)
    one_line(code, message, other)


OUT_OF_RANGE = [
    (["--num-candidates", 0], "--num-candidates 0 is out of range"),
    (["--num-candidates", -3], "--num-candidates -3 is out of range"),
    (["--max-history", -1], "--max-history -1 is out of range"),
    (["--temperature", 0], "--temperature 0.0 is out of range"),
    (["--temperature", -1], "--temperature -1.0 is out of range"),
    (["--topp", 2], "--topp 2.0 is out of range"),
    (["--topp", 0], "--topp 0.0 is out of range"),
    (["--text-truncate", 3], "--text-truncate 3 leaves no room for the context"),
    (["--text-truncate", 0], "--text-truncate 0 is out of range"),
    (["--label-truncate", 0], "--label-truncate 0 is out of range"),
    (["--beam-size", 0], "--beam-size 0 is out of range"),
    (["--topk", 0], "--topk 0 is out of range"),
    (["--lora-rank", -1], "--lora-rank -1 is out of range"),
    (["--lora-rank", 17], "--lora-rank 17 is larger than the model's hidden size 16"),
    (["--personality-permutations", 0], "--personality-permutations 0 is out of range"),
    (["--lm-coef", -1], "--lm-coef -1.0 is out of range"),
    (["--bf16", "true", "--fp16", "true"], "--bf16 and --fp16 exclude each other"),
]


@pytest.mark.parametrize("args,message", OUT_OF_RANGE, ids=[" ".join(map(str, a)) for a, _ in OUT_OF_RANGE])
def test_an_option_out_of_range_is_one_line(args, message, model_file, tmp_path):
    code, printed = run_script("interactive", "-mf", model_file, "--datapath", tmp_path, *args)
    one_line(code, printed, message)


def test_training_options_out_of_range_are_refused_before_anything_is_written(tmp_path):
    from benchmarks.kill_resume import first_dialogs, tiny_bpe_gpt2_dir

    backbone = tiny_bpe_gpt2_dir(tmp_path / "backbone")
    dialogs = first_dialogs(1, tmp_path / "one.txt")
    for args, message in [(["--lora-rank", 17], "larger than the model's hidden size 16"),
                          (["--num-candidates", 0], "--num-candidates 0 is out of range")]:
        code, printed = run_script(
            "train_model", "-m", "transfertransfo", "--model-name", backbone, "-t", "convai2_file",
            "--convai2-file", dialogs, "-mf", tmp_path / "run" / "model", "--datapath", tmp_path, *args,
        )
        one_line(code, printed, message)
        assert not os.path.exists(tmp_path / "run" / "model")


def test_zz_report_fuzz_figures():
    """Last in the module: the figures README states."""
    print(f"\nfuzz: {TALLY['inputs']} inputs, {TALLY['tracebacks']} tracebacks, {TALLY['hangs']} hangs, "
          f"interactive memory {TALLY.get('rss growth', 'not measured')}")
    assert TALLY["tracebacks"] == 0 and TALLY["hangs"] == 0
