"""Helpers for the trust tests (safe loading, resume after SIGKILL, fuzzing).

`tiny_bpe_gpt2_dir` makes a GPT-2 so small that a whole ParlAI model file set (model,
checkpoint with optimizer state, tokenizer) fits in a few hundred KB: a byte-level BPE of
~300 tokens learnt from real ConvAI2 lines, and a 2-layer, 16-wide GPT-2 over it.
"""
import os
import subprocess
import sys

TEST_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")


def first_dialogs(n, path):
    """The first n of the 800 real ConvAI2 validation dialogs, written to path."""
    out, dialogs = [], 0
    with open(CONVAI2_800) as f:
        for line in f:
            if line.startswith("1 "):
                dialogs += 1
                if dialogs > n:
                    break
            out.append(line)
    with open(path, "w") as f:
        f.writelines(out)
    return str(path)


def tiny_bpe_gpt2_dir(path, vocab_size=300, n_positions=64, n_embd=16):
    """A save_pretrained folder: a tiny random GPT2DoubleHeadsModel + a tiny byte-level BPE."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2DoubleHeadsModel, GPT2TokenizerFast

    with open(CONVAI2_800) as f:
        lines = [line.split(" ", 1)[-1] for _, line in zip(range(2000), f)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, show_progress=False)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    GPT2DoubleHeadsModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def run_parlai(*args, stdin=None, timeout=300, env=None):
    """The real `parlai` command; (exit status, stdout, stderr)."""
    proc = subprocess.run([PARLAI, *map(str, args)], input=stdin, capture_output=True,
                          timeout=timeout, env=env)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
