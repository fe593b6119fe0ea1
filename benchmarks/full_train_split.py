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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.full_train_split DATAPATH")
    path, n_dialogs, n_exs = write(sys.argv[1])
    print(f"{path}: {n_dialogs} dialogues, {n_exs} examples (SYNTHETIC: the 800 shipped dialogs repeated, "
          "personas from the training personas)")
