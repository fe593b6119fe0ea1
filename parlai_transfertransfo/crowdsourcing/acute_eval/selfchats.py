"""Models given by their options instead of a log: the launch self-chats them first (as
ParlAI's fast_acute does), with the real `parlai self_chat`, and keeps the logs for reuse.

`selfchat_models` names a JSON file, one entry a model, each an object of `parlai self_chat`
options in ParlAI's .opt spelling:

    {"zoo": {"model_file": "zoo:transfertransfo/smollm2_135m/model"},
     "backbone": {"model": "transfertransfo", "model_name": "smollm2-135m"}}

Each log goes to `{results_folder}/selfchats/NAME.jsonl`; one already there is reused.
Everything is checked before the first self-chat starts; a failed self-chat is one line.
"""
import json
import os
import subprocess
import sys

from parlai_transfertransfo.crowdsourcing import environment, launch
from parlai_transfertransfo.crowdsourcing.launch import CrowdError


def plan(path, folder, taken=()) -> dict:
    """{NAME: (its log, its self_chat arguments)}, every entry checked."""
    if not path:
        return {}
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8") as f:
            models = json.load(f)
    except OSError:
        raise CrowdError(f"selfchat_models file {path} does not exist") from None
    except ValueError as err:
        raise CrowdError(f"selfchat_models file {path}: not JSON ({err})") from None
    if not isinstance(models, dict) or not models:
        raise CrowdError(f"selfchat_models file {path}: not an object of NAME: {{self_chat options}}")
    planned = {}
    for name, opts in models.items():
        where = f"selfchat_models file {path}, model '{name}'"
        if name in taken:
            raise CrowdError(f"{where}: selfchat_logs names it too")
        if not isinstance(opts, dict) or not (opts.get("model_file") or opts.get("model")):
            raise CrowdError(f"{where}: needs \"model_file\" (or \"model\" and its options)")
        if opts.get("model_file"):
            launch.check_model_file(str(opts["model_file"]))
        args = []
        for key, value in opts.items():
            if key in ("outfile", "num_self_chats", "batchsize", "selfchat_max_turns"):
                raise CrowdError(f"{where}: \"{key}\" is set by the launch (selfchat_count, selfchat_max_turns)")
            args += [f"--{key.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
        planned[name] = (os.path.join(folder, "selfchats", name), args)
    return planned


def run_missing(planned, count, max_turns) -> dict:
    """Self-chat each planned model without a log yet; {NAME: its log}."""
    parlai = os.path.join(os.path.dirname(sys.executable), "parlai")
    for name, (log, args) in planned.items():
        if os.path.isfile(log + ".jsonl"):
            print(f"model {name}: reusing its self-chats {log}.jsonl", flush=True)
            continue
        os.makedirs(os.path.dirname(log), exist_ok=True)
        command = [parlai, "self_chat", "-t", "convai2", *args, "--num-self-chats", str(count), "-bs", str(count),
                   "--selfchat-max-turns", str(max_turns), "--outfile", log]
        print(f"model {name}: {count} self-chats ({' '.join(args)}) into {log}.jsonl", flush=True)
        # the self-chat dies with the launch (SIGKILL included) and stops on Ctrl-C
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=environment.die_with_parent())
        try:
            output, _ = proc.communicate()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise CrowdError(f"interrupted: the self-chats of model {name} were stopped, nothing saved") from None
        if proc.returncode != 0:
            last = [line for line in output.splitlines() if line.strip()][-1:] or ["(no output)"]
            raise CrowdError(f"the self-chats of model {name} failed: {last[0].strip()}")
    return {name: log for name, (log, _) in planned.items()}
