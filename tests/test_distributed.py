"""Training on several processes, on this one machine: torchrun (2 "nodes" x 2 processes on
127.0.0.1, env://, gloo) and SLURM (ParlAI's distributed_train with the SLURM variables set and
a stand-in `scontrol` on PATH: a test double for the cluster, not for our code) end in the
loss and weights of one process stepping through the same global batches with gradient
accumulation; bad launches are one line; a rank that dies stops the others in one line.

The runs step with plain SGD: Adam divides each gradient by its running size, so a
gradient near zero turns the last-bit differences of a summation order (ranks add their
gradients in another order than one process accumulates them) into differences of a whole
step; SGD's steps are the gradients themselves, comparable to 1e-5."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TEST_DATA, _save_tiny, free_port
from parlai_transfertransfo.weights.safe_load import load_states

BIN = os.path.dirname(sys.executable)
PARLAI, TORCHRUN = os.path.join(BIN, "parlai"), os.path.join(BIN, "torchrun")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, BS = 3, 2
CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")


def first_turns(n, path):
    """The first turn of each of the first n real dialogs, each its own episode: then
    ParlAI's ordered batches of one process (-bs B) are exactly the ranks' batches."""
    out, dialogs, kept = [], 0, False
    with open(CONVAI2_800) as f:
        for line in f:
            if line.startswith("1 "):
                dialogs += 1
                if dialogs > n:
                    break
                kept = False
            if "\t" in line:
                if kept:
                    continue
                kept = True
            out.append(line)
    with open(path, "w") as f:
        f.writelines(out)
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny GPT-2 without dropout, a model file of it every run starts from, and 24
    one-turn episodes."""
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    from parlai_transfertransfo.weights.model_files import write_model_file

    root = tmp_path_factory.mktemp("distributed")
    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0,
                        embd_pdrop=0, attn_pdrop=0, summary_first_dropout=0)
    backbone = _save_tiny(root / "tiny", config, GPT2DoubleHeadsModel)
    write_model_file(backbone, str(root / "init" / "model"), str(root / "data"), model_name=backbone)
    return {"root": root, "backbone": backbone, "init": str(root / "init" / "model"),
            "data": first_turns(24, root / "turns.txt")}


def train_args(setup, model_file, *extra):
    return ["-m", "transfertransfo", "--model-name", setup["backbone"], "--init-model", setup["init"],
            "-t", "convai2_file", "--convai2-file", setup["data"], "--valid-split", 0, "-dt", "train:ordered",
            "-mf", model_file, "--datapath", setup["root"] / "data", "-bs", BS, "--optimizer", "sgd", "-lr", 0.5,
            "--lr-scheduler", "none", "--max-train-steps", STEPS, "--skip-generation", "true",
            "--log-every-n-steps", 1, "--validation-every-n-epochs", -1, *extra]


def run(cmd, env=None, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


def reports(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and line.endswith("}")]


def weights(model_file):
    return load_states(model_file)["model"]


def assert_same_training(got_file, want_file, got_out, want_out):
    got, want = weights(got_file), weights(want_file)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name].float(), want[name].float(), atol=1e-5, rtol=0), name
    got_train = [r for r in reports(got_out) if "mc_loss" in r]
    want_train = [r for r in reports(want_out) if "mc_loss" in r]
    assert len(got_train) == len(want_train) == STEPS - 1  # the last step stops the loop before its log
    for g, w in zip(got_train, want_train):
        assert g["exs"] == w["exs"] == 4 * BS
        for key in ("loss", "mc_loss", "gnorm"):
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-5), key


@pytest.fixture(scope="module")
def one_process(setup):
    """One process, -bs 2 with --update-freq 4: the global batch of 4 ranks at -bs 2."""
    model_file = setup["root"] / "single" / "model"
    code, out = run([PARLAI, "train_model", *train_args(setup, model_file, "--update-freq", 4)])
    assert code == 0, out[-3000:]
    return str(model_file), out


def test_torchrun_two_nodes_of_two_processes_train_as_one_process_with_accumulation(setup, one_process, tmp_path):
    model_file = tmp_path / "model"
    port = free_port()
    nodes = [
        subprocess.Popen(
            [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "2", "--node-rank", str(node), "--master-addr",
             "127.0.0.1", "--master-port", str(port), "-m", "parlai_transfertransfo.distributed", "train_model",
             *map(str, train_args(setup, model_file))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )
        for node in (0, 1)
    ]
    outs = [p.communicate(timeout=400)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert_same_training(str(model_file), *one_process[:1], outs[0], one_process[1])
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(os.path.dirname(one_process[0])))  # rank 0 wrote once
    # validation at the end: the 24 examples split over 4 ranks, aggregated into one report
    assert reports(outs[0])[-1]["exs"] == 24


def slurm(setup, tasks, model_file, *extra, path_extra=None, env_extra=None):
    """`srun --ntasks N python -m parlai.scripts.distributed_train ...`, done by hand: the
    SLURM variables srun sets, and `scontrol` answering for a one-node allocation."""
    stub = setup["root"] / "slurm-bin"
    stub.mkdir(exist_ok=True)
    (stub / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (stub / "scontrol").chmod(0o755)
    port = free_port()
    procs = []
    for rank in range(tasks):
        env = {**os.environ, "SLURM_JOB_NODELIST": "node001", "SLURM_NTASKS": str(tasks),
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
               "PATH": (path_extra or str(stub)) + os.pathsep + os.environ["PATH"], **(env_extra or {})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "parlai.scripts.distributed_train", *map(str, train_args(setup, model_file)),
             "--port", str(port), *map(str, extra)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
        ))
    return procs


def test_slurm_with_four_tasks_trains_as_one_process_with_accumulation(setup, one_process, tmp_path):
    procs = slurm(setup, 4, tmp_path / "model")
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs[0][-3000:]
    assert_same_training(str(tmp_path / "model"), one_process[0], outs[0], one_process[1])


def test_a_rank_that_dies_stops_the_others_in_one_line(setup, tmp_path):
    procs = slurm(setup, 2, tmp_path / "model", "--max-train-steps", 100000,
                  env_extra={"TRANSFERTRANSFO_DISTRIBUTED_TIMEOUT": "60"})
    seen = []
    for line in procs[0].stdout:  # rank 0's train logs: training is under way
        seen.append(line)
        if '"mc_loss"' in line:
            break
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    out = "".join(seen) + procs[0].communicate(timeout=180)[0]
    procs[1].wait()
    assert time.time() - start < 120
    assert procs[0].returncode != 0
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("rank 0: stopped: another rank stopped")


@pytest.mark.parametrize("case", ["world size", "nccl", "no torchrun", "port", "no scontrol"])
def test_bad_launches_are_one_line(case, setup, tmp_path):
    model_file = tmp_path / "model"
    if case in ("world size", "nccl"):
        extra = ["--distributed-world-size", 3] if case == "world size" else ["--distributed-backend", "nccl"]
        code, out = run([TORCHRUN, "--nproc-per-node", "1", "--master-port", free_port(), "-m",
                         "parlai_transfertransfo.distributed", "train_model", *train_args(setup, model_file), *extra])
        want = ("--distributed-world-size 3 but torchrun started 1 process:" if case == "world size"
                else "--distributed-backend nccl needs GPUs and this machine has no GPU: use gloo")
        assert code != 0 and want in out
        assert "Traceback" not in "\n".join(l for l in out.splitlines() if "parlai_transfertransfo" in l)
        return
    if case == "no torchrun":
        code, out = run([sys.executable, "-m", "parlai_transfertransfo.distributed", "train_model",
                         *train_args(setup, model_file)])
        assert code != 0 and "Traceback" not in out
        assert out.strip().splitlines()[-1].startswith("parlai_transfertransfo.distributed: RANK, WORLD_SIZE")
        return
    if case == "port":
        import socket

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            procs = slurm(setup, 1, model_file, "--port", port)
            out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode != 0 and "Traceback" not in out
        assert out.strip().splitlines()[-1] == f"parlai distributed_train: port {port} is in use on localhost: pass another --port"
        return
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env_path = str(empty)
    procs = slurm(setup, 1, model_file, path_extra=env_path)
    # without the stand-in scontrol on PATH (none is installed on this machine)
    out = procs[0].communicate(timeout=120)[0]
    assert procs[0].returncode != 0 and "Traceback" not in out
    assert out.strip().splitlines()[-1] == "parlai distributed_train: scontrol is not on PATH: run it under srun on a SLURM node"


def test_torchrun_killed_resumes_from_its_checkpoint_with_two_ranks(tmp_path):
    """The kill-and-resume invariants (benchmarks/kill_resume.py, tests/test_trust_resume.py)
    with two ranks under torchrun: SIGKILL to the whole launch, then the same command."""
    from benchmarks.kill_resume import kill_resume

    summary = kill_resume("torchrun", kills=1, steps=12, work=str(tmp_path), seed=3, window=1.0)
    assert summary["kills"] + summary["finished_early"] == 1, summary
    assert summary["resumed"] >= 1 and summary["final_train_steps"] in (11, 12)
