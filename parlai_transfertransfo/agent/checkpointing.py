"""Model files that are never half-written, and training that resumes where it was killed.

Every file of a save is atomic (weights/atomic_files.py): a reader, or a run killed at any
moment, sees the old file or the new one, never a mix. A save writes the side files first
(dictionary, .hf_config.json), then the model file, which is the commit point, then `.opt`.

ParlAI keeps the loop's progress (epochs, train steps, best validation, reports) in a
separate `.trainstats` file written after the model file: a kill between the two resumed
with the update count of one save and the best validation of the previous one. Each model
file therefore carries its own copy (`TRAINSTATS_KEY`), and resuming takes that copy, and
the better best validation of checkpoint and best model, so a resumed run never overwrites
a better model with a worse one.
"""
import json
import os

from parlai_transfertransfo.weights.atomic_files import atomic_file, remove_stale_temporaries

TRAINSTATS_KEY = "transfertransfo_trainstats"  # a JSON string: plain data for the safe loader
OPT_NEVER_SAVED = ("trust_model_file",)  # see safe_load: a file must not vouch for itself


# --- the agent's save ------------------------------------------------------------------------------
def save_model_files(agent, path):
    """TorchAgent.save for our agent, every file atomic: dictionary (once), .hf_config.json,
    the model file (with the loop's train statistics), then .opt."""
    from parlai.core.opt import Opt

    from parlai_transfertransfo.weights import backbones

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
    from parlai_transfertransfo.weights.safe_load import load_states

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
