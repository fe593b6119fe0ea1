"""A ConvAI2 train split of the official size, SYNTHETIC, built from what is here.

ConvAI2's `train_self_original.txt` (17,878 dialogues, 131,438 examples) is not on these
machines. This writes a file of the same size and format: the 800 shipped validation
dialogs, over and over, each copy with its persona replaced by the next of the 17,878
packaged training personas, cut at exactly 131,438 examples. Its dialogues are repeats:
use it for speed and memory at scale, never for model quality.

    python -m benchmarks.full_train_split DATAPATH
        -> DATAPATH/ConvAI2/train_self_original.txt (+ the shipped valid file), marked built,
           so that `parlai train_model -t convai2 --datapath DATAPATH` trains on it offline.
"""
import os
import sys

from benchmarks.kill_resume import CONVAI2_800
from parlai_transfertransfo.data import convai2, fbdialog, personas

TRAIN_EXAMPLES = 131_438  # ParlAI's convai2_train.yml: num_examples of the self_original train split
TRAIN_DIALOGS = 17_878


def synthetic_dialogs(n_examples=TRAIN_EXAMPLES):
    """Yield the shipped dialogs cyclically, persona i of the training personas on copy i,
    until exactly n_examples utterances (the last dialog cut short)."""
    dialogs = fbdialog.read_dialogs(CONVAI2_800)
    pool = personas.load_personas()
    made, i = 0, 0
    while made < n_examples:
        source = dialogs[i % len(dialogs)]
        persona = [f"your persona: {sentence}" for sentence in pool[i % len(pool)]]
        turns = source.turns[: n_examples - made]
        yield fbdialog.Dialog(line=0, context=persona, turns=turns)
        made += len(turns)
        i += 1


def write(datapath, n_examples=TRAIN_EXAMPLES):
    """Write the split under datapath as ParlAI's convai2 build leaves it; returns
    (path, dialogs, examples)."""
    folder = os.path.join(datapath, convai2.FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "train_self_original.txt")
    n_dialogs = n_exs = 0
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for dialog in synthetic_dialogs(n_examples):
            f.write(fbdialog.format_dialog(dialog))
            n_dialogs += 1
            n_exs += len(dialog.turns)
    os.replace(path + ".tmp", path)
    valid = os.path.join(folder, "valid_self_original.txt")
    if not os.path.exists(valid):
        with open(CONVAI2_800, encoding="utf-8") as src, open(valid, "w", encoding="utf-8") as dst:
            dst.write(src.read())
    with open(os.path.join(folder, ".built"), "w") as f:
        f.write(f"synthetic\n{convai2.VERSION}")
    return path, n_dialogs, n_exs


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def train_here(datapath, model, datatype, steps, batch):
    """`parlai train_model -t convai2` on the split, in this process: seconds to the first
    training step, examples/s after it, and resident memory sampled every half second."""
    import threading
    import time

    from parlai.core.torch_agent import TorchAgent
    from parlai.scripts.train_model import TrainModel

    start, marks, samples, done = time.perf_counter(), [], [], threading.Event()

    def sample():
        while not done.wait(0.5):
            samples.append((round(time.perf_counter() - start, 1), round(rss_mib())))

    batch_act = TorchAgent.batch_act

    def timed(agent, observations):
        out = batch_act(agent, observations)
        if agent.is_training:
            marks.append(time.perf_counter() - start)
        return out

    TorchAgent.batch_act = timed
    threading.Thread(target=sample, daemon=True).start()
    TrainModel.main("-m", "transfertransfo", "--model-name", model, "-t", "convai2", "-dt", datatype,
                    "--datapath", datapath, "-mf", os.path.join(datapath, "model-" + datatype.replace(":", "-"), "model"),
                    "-bs", str(batch), "--num-candidates", "4", "--personality-permutations", "2",
                    "--max-train-steps", str(steps), "--log-every-n-secs", "-1", "--validation-every-n-epochs", "-1",
                    "--short-final-eval", "true", "--validation-max-exs", "8", "--skip-generation", "true", "--no-cuda")
    done.set()
    first, last = marks[0], marks[-1]
    return {"datatype": datatype, "first_step_s": round(first, 1),
            "examples_per_s": round(batch * (len(marks) - 1) / (last - first), 1),
            "rss_mib": samples, "max_rss_mib": max(m for _, m in samples)}


if __name__ == "__main__":
    if len(sys.argv) == 2:
        path, n_dialogs, n_exs = write(sys.argv[1])
        print(f"{path}: {n_dialogs} dialogues, {n_exs} examples (SYNTHETIC: the 800 shipped dialogs repeated, "
              "personas from the training personas)")
    elif len(sys.argv) == 6 and sys.argv[1] == "train":  # train DATAPATH MODEL DATATYPE STEPS
        import json

        print(json.dumps(train_here(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), 32)))
    else:
        raise SystemExit("usage: python -m benchmarks.full_train_split DATAPATH")
