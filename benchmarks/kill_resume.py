"""Kill training with SIGKILL at random moments, rerun the same command, check every invariant.

    .venv/bin/python -m benchmarks.kill_resume --kind train_model --kills 30 [--seed 0]
    kinds: train_model, multiprocessing_train, torchrun (2 ranks), zoo_script (train_smollm2_135m.sh)

A tiny GPT-2 (tiny Llama for the zoo script) trains on real ConvAI2 dialogs with a
checkpoint every step. Each kill lands at a random moment after a run began saving, or (every
other kill) the instant a save has a temporary file open, i.e. in the middle of a save.
After each kill:
  - the model file and the checkpoint are each absent or whole: weights-only loadable, with
    their .opt, .hf_config.json, dictionary and .trainstats readable;
and the rerun of the same command:
  - resumes from the checkpoint left on disk: the same update count and train steps, the
    better best validation of checkpoint and best model, optimizer and scheduler restored.
Finally a run without kills must finish with exactly the steps asked for.
"""
import argparse
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVAI2_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")
PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
ZOO_SCRIPT = os.path.join(REPO, "zoo", "transfertransfo", "train_smollm2_135m.sh")
RESUMED = re.compile(
    r"resuming from (\S+): (\d+) updates, (\d+) train steps, \S+ epochs, best valid \S+ (\S+(?: yet)?)"
)


class Broken(AssertionError):
    """An invariant that did not hold."""


# --- tiny models and data ------------------------------------------------------------------------
def first_dialogs(n, path):
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


def _tiny_bpe(n_lines=2000, vocab_size=300):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    with open(CONVAI2_800) as f:
        lines = [line.split(" ", 1)[-1] for _, line in zip(range(n_lines), f)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, show_progress=False)
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer)


def tiny_bpe_gpt2_dir(path, n_positions=64, n_embd=16):
    """save_pretrained folder: a 2-layer, 16-wide random GPT-2 over a 300-token byte-level BPE
    learnt from real ConvAI2 lines (a model file set of a few hundred KB)."""
    import torch
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    tokenizer = _tiny_bpe()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=2,
                        n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2DoubleHeadsModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def tiny_bpe_llama_dir(path):
    """The same for the zoo script, whose LoRA targets Llama-family projections."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_bpe()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# --- the commands ---------------------------------------------------------------------------------
def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(kind, work, steps):
    """(argv, model file) of one training run that checkpoints at every step."""
    if kind == "zoo_script":
        backbone = os.path.join(work, "backbone-llama")
        if not os.path.isdir(backbone):
            tiny_bpe_llama_dir(backbone)
        out = os.path.join(work, "run")
        argv = ["bash", ZOO_SCRIPT, "--model-name", backbone, "--epochs", f"{steps * 8 / 5470:.4f}",
                "--dev-examples", "4", "--rank", "2", "--out", out, "--save-every", "0.001"]
        return argv, os.path.join(out, "model")
    backbone = os.path.join(work, "backbone")
    if not os.path.isdir(backbone):
        tiny_bpe_gpt2_dir(backbone)
    dialogs = os.path.join(work, "dialogs.txt")
    if not os.path.isfile(dialogs):
        first_dialogs(4, dialogs)
    model_file = os.path.join(work, "run", "model")
    launcher = [PARLAI, kind]
    if kind == "torchrun":
        launcher = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc-per-node", 2, "--master-port",
                    free_port(), "-m", "parlai_transfertransfo.distributed", "train_model"]
    argv = [
        *launcher, "-m", "transfertransfo", "--model-name", backbone, "-t", "convai2_file",
        "--convai2-file", dialogs, "--valid-split", 1, "-mf", model_file, "--datapath",
        os.path.join(work, "data"), "-bs", 2, "--max-train-steps", steps, "--save-every-n-secs", 0.001,
        "--validation-every-n-steps", 4, "--validation-max-exs", 4, "--validation-metric", "hits@1",
        "--validation-patience", 0,  # no early stop: the run must reach --max-train-steps
        "--skip-generation", "true", "--lr-scheduler", "invsqrt", "--warmup-updates", 2,
        "--short-final-eval", "true", "--log-every-n-steps", 4, "-lr", 1e-3,
    ]
    if kind == "multiprocessing_train":
        argv += ["--distributed-world-size", 2, "--port", free_port()]
    return [str(a) for a in argv], model_file


# --- invariants -----------------------------------------------------------------------------------
def check_model_files(model_file):
    """Facts about one model file set, or Broken. None when it does not exist (yet)."""
    from transformers import AutoTokenizer

    from parlai_transfertransfo.weights import backbones
    from parlai_transfertransfo.agent.checkpointing import TRAINSTATS_KEY
    from parlai_transfertransfo.errors import TransfertransfoError
    from parlai_transfertransfo.weights.safe_load import load_states

    if not os.path.exists(model_file):
        return None
    try:
        states = load_states(model_file)
        for side in (".opt", ".hf_config.json", ".dict"):
            if not os.path.isfile(model_file + side):
                raise Broken(f"{model_file} exists without its {side}")
        with open(model_file + ".opt") as f:
            json.load(f)
        backbones.load_config_file(model_file + ".hf_config.json")
        AutoTokenizer.from_pretrained(model_file + ".dict.hf")
        stats = json.loads(states[TRAINSTATS_KEY]) if TRAINSTATS_KEY in states else None
        if os.path.exists(model_file + ".trainstats"):
            with open(model_file + ".trainstats") as f:
                json.load(f)
    except (TransfertransfoError, OSError, ValueError, KeyError) as e:
        raise Broken(f"{model_file} is not loadable: {e}")
    return {"updates": states["number_training_updates"], "stats": stats}


def temporaries(model_file):
    return set(glob.glob(os.path.join(os.path.dirname(model_file), ".*.tmp")))


def snapshot(model_file, before=frozenset()):
    """What a correct resume must restore, read from the files a kill left; `mid_save`: the
    kill left a new temporary file, so it struck in the middle of writing one."""
    checkpoint = check_model_files(model_file + ".checkpoint")
    best = check_model_files(model_file)
    return {"checkpoint": checkpoint, "best": best, "mid_save": bool(temporaries(model_file) - before)}


def expected_resume(snap, mode="max"):
    """(path suffix, updates, train steps, best valid) the rerun must report, or None."""
    source = snap["checkpoint"] or snap["best"]
    if source is None or source["stats"] is None:
        return None
    bests = [s["stats"].get("best_valid") for s in (snap["checkpoint"], snap["best"]) if s and s["stats"]]
    bests = [b for b in bests if b is not None]
    best = (max if mode == "max" else min)(bests) if bests else None
    suffix = ".checkpoint" if snap["checkpoint"] else ""
    return suffix, source["updates"], source["stats"]["train_steps"], best


def check_resume(log, model_file, expected):
    found = RESUMED.search(log)
    if expected is None:
        if found:
            raise Broken(f"resumed from {found.group(1)} though no checkpoint was on disk")
        return
    suffix, updates, steps, best = expected
    if not found:
        raise Broken(f"did not resume from {model_file}{suffix} ({updates} updates)")
    got = (found.group(1), int(found.group(2)), int(found.group(3)), found.group(4))
    want = (model_file + suffix, updates, steps, "none yet" if best is None else f"{best:.4g}")
    if got != want:
        raise Broken(f"resumed {got}, expected {want}")
    if "Optimizer was reset" in log or "not loading optim state" in log:
        raise Broken("the optimizer (and with it the LR scheduler) was reset on resume")


# --- one kill --------------------------------------------------------------------------------------
def start(argv, log_path):
    log = open(log_path, "wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHON=sys.executable)
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env), log


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def run_and_kill(argv, model_file, log_path, rng, mid_save, window, timeout=600):
    """Start, wait until training began, kill (at random or in a save); True if it finished first."""
    proc, log = start(argv, log_path)
    folder = os.path.dirname(model_file)
    deadline = time.time() + timeout
    try:
        while "training..." not in read(log_path):
            if proc.poll() is not None or time.time() > deadline:
                return proc.poll() is not None
            time.sleep(0.05)
        # a mid-save kill strikes in the nth file written; a random one at a random moment
        # of `window` seconds after this run's first save began (so each run can progress)
        nth_write, seen, kill_at = rng.randint(1, 12), set(), None
        while proc.poll() is None and time.time() < deadline:
            seen |= set(glob.glob(os.path.join(folder, ".model*.tmp")))
            if mid_save and len(seen) >= nth_write:
                break
            if not mid_save and seen and kill_at is None:
                kill_at = time.time() + rng.uniform(0, window)
            if kill_at is not None and time.time() >= kill_at:
                break
            time.sleep(0.002)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        return finished
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def kill_resume(kind, kills, steps, work, seed=0, window=10.0, say=print):
    """Run the experiment; returns a summary dict. Raises Broken at the first violation."""
    rng = random.Random(seed)
    argv, model_file = command(kind, work, steps)
    summary = {"kind": kind, "kills": 0, "mid_save": 0, "resumed": 0, "finished_early": 0}
    expected = None
    for k in range(kills):
        log_path = os.path.join(work, f"run{k}.log")
        before = temporaries(model_file)
        finished = run_and_kill(argv, model_file, log_path, rng, mid_save=k % 2 == 1, window=window)
        log = read(log_path)
        if "Traceback" in log:
            raise Broken(f"run {k} printed a traceback:\n{log[-3000:]}")
        check_resume(log, model_file, expected)
        summary["resumed"] += expected is not None
        if finished:
            # the run ended on its own: the rerun resumes whatever this run left on disk
            summary["finished_early"] += 1
            expected = expected_resume(snapshot(model_file))
            break
        snap = snapshot(model_file, before)
        summary["kills"] += 1
        summary["mid_save"] += snap["mid_save"]
        expected = expected_resume(snap)
        say(f"kill {k + 1}: {'in a save' if snap['mid_save'] else 'between saves'}; checkpoint at "
            f"{snap['checkpoint']['updates'] if snap['checkpoint'] else '-'} updates")
    log_path = os.path.join(work, "final.log")
    proc, log = start(argv, log_path)
    code = proc.wait(timeout=900)
    log.close()
    text = read(log_path)
    if code != 0 or "Traceback" in text:
        raise Broken(f"the final run failed ({code}):\n{text[-3000:]}")
    check_resume(text, model_file, expected)
    summary["resumed"] += expected is not None
    with open(model_file + ".trainstats") as f:
        done = json.load(f)["train_steps"]
    # ParlAI's scheduler stops the loop at the update that reaches --max-train-steps, before
    # the loop counts that step: an uninterrupted run ends at steps - 1 as well
    if kind != "zoo_script" and done not in (steps - 1, steps):
        raise Broken(f"the final run stopped at {done} train steps, not {steps}")
    summary["final_train_steps"] = done
    check_model_files(model_file)
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.kill_resume", description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="train_model", choices=["train_model", "multiprocessing_train", "torchrun", "zoo_script"])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--steps", type=int, default=200, help="train steps of the whole run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=10.0, help="random kills land at most this many seconds after a run's first save")
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as work:
        work = args.workdir or work
        os.makedirs(work, exist_ok=True)
        start_time = time.time()
        try:
            summary = kill_resume(args.kind, args.kills, args.steps, work, args.seed, args.window)
        except Broken as e:
            print(f"FAILED: {e}")
            return 1
    print(f"{args.kind}: {summary['kills']} SIGKILLs ({summary['mid_save']} in the middle of a save), "
          f"{summary['resumed']} resumes checked, every model file and checkpoint loadable after each, "
          f"final run {summary['final_train_steps']} train steps; {time.time() - start_time:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
