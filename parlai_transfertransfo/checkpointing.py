"""Model files that are never half-written, and training that resumes where it was killed.

Every file of a save is written to a temporary name beside it, flushed to disk (fsync) and
renamed over the old one (`atomic_file`): a reader, or a run killed at any moment, sees the
old file or the new one, never a mix. A save writes the side files first (dictionary,
.hf_config.json), then the model file, which is the commit point, then `.opt`.

ParlAI keeps the loop's progress (epochs, train steps, best validation, reports) in a
separate `.trainstats` file written after the model file: a kill between the two resumed
with the update count of one save and the best validation of the previous one. Each model
file therefore carries its own copy (`TRAINSTATS_KEY`), and resuming takes that copy, and
the better best validation of checkpoint and best model, so a resumed run never overwrites
a better model with a worse one.
"""
import contextlib
import glob
import json
import os
import tempfile

def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # temporary files are created 0600; finished ones get the usual mode
TRAINSTATS_KEY = "transfertransfo_trainstats"  # a JSON string: plain data for the safe loader
OPT_NEVER_SAVED = ("trust_model_file",)  # see safe_load: a file must not vouch for itself


# --- atomic files ------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path beside `path`; on success it is fsynced and renamed to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync(folder)


def atomic_directory(path, write):
    """`write(folder)` fills a staging folder that then replaces `path` (used only while
    nothing refers to `path` yet: its marker file is written after)."""
    import shutil

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    os.chmod(staging, 0o777 & ~UMASK)
    try:
        write(staging)
        for name in os.listdir(staging):
            _fsync(os.path.join(staging, name))
        _fsync(staging)
        old = None
        if os.path.isdir(path):  # set aside, not deleted first: the window is one rename
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
            os.replace(path, os.path.join(old, "previous"))
        os.replace(staging, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync(parent)


def write_json(path, value, **kwargs):
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, **kwargs)
            f.write("\n")


def remove_stale_temporaries(path):
    """Temporary files a killed save left beside `path` (never the finished files)."""
    import shutil

    folder, base = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}*.tmp")):
        if os.path.isdir(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(stale)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the agent's save ------------------------------------------------------------------------------
def save_model_files(agent, path):
    """TorchAgent.save for our agent, every file atomic: dictionary (once), .hf_config.json,
    the model file (with the loop's train statistics), then .opt."""
    from parlai.core.opt import Opt

    from parlai_transfertransfo import backbones

    if not path:
        return
    remove_stale_temporaries(path)
    if hasattr(agent, "dict") and not os.path.exists(path + ".dict"):
        agent.dict.save(path + ".dict", sort=False)
    if hasattr(agent, "model"):
        with atomic_file(path + ".hf_config.json") as tmp:
            backbones.save_config(agent._double_heads().config, tmp)
    states = agent.state_dict()
    if not states:
        return
    stats = getattr(agent, "pending_trainstats", None)
    if stats is not None:
        states[TRAINSTATS_KEY] = json.dumps(stats)
    opt = Opt({k: v for k, v in agent.opt.items() if k not in OPT_NEVER_SAVED})
    first = not os.path.exists(path + ".opt")  # then .opt first: a model file never lacks one
    for write in ([_save_opt, _save_states] if first else [_save_states, _save_opt]):
        write(path, opt, states)


def _save_states(path, opt, states):
    import torch

    with atomic_file(path) as tmp:
        torch.save(states, tmp)


def _save_opt(path, opt, states):
    with atomic_file(path + ".opt") as tmp:
        opt.save(tmp)


# --- ParlAI's TrainLoop: statistics saved with the model, resumed from it -------------------------
def train_stats(loop):
    """What ParlAI's TrainLoop writes to `.trainstats` (the same keys), as plain JSON data."""
    from parlai.core.metrics import dict_report

    stats = {
        "parleys": loop.parleys,
        "train_time": loop.train_time.time(),
        "train_steps": loop._train_steps,
        "total_epochs": getattr(loop, "_total_epochs", loop._preempted_epochs),
        "train_reports": loop.train_reports,
        "valid_reports": loop.valid_reports,
        "best_valid": loop.best_valid,
        "impatience": loop.impatience,
        "final_valid_report": dict_report(loop.final_valid_report),
        "final_test_report": dict_report(loop.final_test_report),
        "final_extra_valid_report": dict_report(loop.final_extra_valid_report),
    }
    return json.loads(json.dumps(stats, default=float))  # numpy numbers -> plain floats


def remember_loaded(agent, path, states):
    """Called by the agent's load: what a resuming TrainLoop needs from the file it loaded."""
    agent.loaded_model_file = path
    raw = states.get(TRAINSTATS_KEY)
    agent.resumed_trainstats = json.loads(raw) if isinstance(raw, str) else None


def embedded_trainstats(path):
    """The train statistics inside a model file, or None (read lazily: tensors are mmapped)."""
    from parlai_transfertransfo.errors import TransfertransfoError
    from parlai_transfertransfo.safe_load import load_states

    try:
        raw = load_states(path, mmap=True).get(TRAINSTATS_KEY)
    except TransfertransfoError:
        return None
    return json.loads(raw) if isinstance(raw, str) else None


def resume(loop):
    """After ParlAI's TrainLoop.__init__: if the agent resumed this run's checkpoint (or best
    model), take the loop's progress from that same file, not from a `.trainstats` that a
    kill may have left one save behind; keep the best validation of checkpoint and model."""
    from parlai.utils import logging

    model_file = loop.opt.get("model_file")
    loaded = getattr(loop.agent, "loaded_model_file", None)
    stats = getattr(loop.agent, "resumed_trainstats", None)
    if not model_file or stats is None or loaded not in (model_file, model_file + ".checkpoint"):
        return
    loop.parleys = stats.get("parleys", 0)
    loop._preempted_epochs = stats.get("total_epochs", 0)
    loop.train_time.total = stats.get("train_time", 0)
    loop._train_steps = stats.get("train_steps", 0)
    loop.impatience = stats.get("impatience", 0)
    loop.valid_reports = stats.get("valid_reports", [])
    loop.last_valid_epoch = loop.valid_reports[-1].get("total_epochs", 0.0) if loop.valid_reports else 0
    loop.train_reports = stats.get("train_reports", [])
    loop.best_valid = stats.get("best_valid")
    if loaded != model_file and os.path.isfile(model_file):
        best_model = embedded_trainstats(model_file) or {}
        other = best_model.get("best_valid")
        if other is not None and (loop.best_valid is None or loop.valid_optim * other > loop.valid_optim * loop.best_valid):
            loop.best_valid = other  # the best model was saved, the checkpoint after it was not
    if os.path.isfile(model_file) and loop.best_valid is not None:
        loop.saved = True  # this run's best model is on disk: the end must not overwrite it
    if _finished(loop):  # killed after its last update (in the final evaluation, say)
        _stop_before_training(loop)
    best = "none yet" if loop.best_valid is None else f"{loop.best_valid:.4g}"
    logging.info(
        f"resuming from {loaded}: {loop.agent._number_training_updates} updates, "
        f"{loop._train_steps} train steps, {loop._preempted_epochs:.3g} epochs, "
        f"best valid {loop.opt.get('validation_metric')} {best}"
    )


def _finished(loop):
    return (
        loop._train_steps >= loop.max_train_steps
        or loop._preempted_epochs >= loop.max_num_epochs
        or loop.train_time.total >= loop.max_train_time
    )


def _stop_before_training(loop):
    """ParlAI's loop trains one step before it checks its limits: a finished run rerun
    would take one update more than asked. Stop at the first step instead, so the rerun
    goes straight to the final evaluation, as the killed run was doing."""
    from parlai.core.exceptions import StopTrainException

    def parley():
        del loop.world.parley  # one stop only: later worlds (evaluation) parley as usual
        raise StopTrainException("training had finished before it was interrupted")

    loop.world.parley = parley
