"""Launch the ConvAI2-style human evaluation of transfertransfo models (ParlAI's model_chat).

    python -m parlai_transfertransfo.crowdsourcing.model_chat \\
        mephisto/architect=local mephisto/provider=mock \\
        mephisto.blueprint.model_file=zoo:transfertransfo/smollm2_135m/model

Hydra overrides as in ParlAI's crowdsourcing tasks (hydra_configs/conf/convai2.yaml lists
the keys); `mephisto/provider=mturk_sandbox` or `mturk` with
`mephisto.provider.requester_name=NAME` runs it for real.  The models are loaded once, their
reply latency is logged, and every worker's chat gets a shared copy.  Then
`parlai model_chat_results --results-folder DIR` compiles what was saved.
"""
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, List

from mephisto.operations.hydra_config import TaskConfig

from parlai_transfertransfo.crowdsourcing import environment, frontend, launch

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hydra_configs")
LATENCY_PROBE = "hi ! how are you doing today ? what do you like to do for fun ?"


@dataclass
class ModelChatConfig(TaskConfig):
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"conf": "convai2"}])
    mephisto_data_dir: str = field(
        default="", metadata={"help": "this evaluation's Mephisto database and files (default: {datapath}/mephisto)"}
    )
    monitoring_log_rate: int = 30


def register_config():
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="model_chat", node=ModelChatConfig)


def load_config(overrides):
    from omegaconf import OmegaConf

    # the blueprint must be registered before Hydra resolves its config group
    from parlai_transfertransfo.crowdsourcing.model_chat import blueprint  # noqa: F401

    register_config()
    cfg = launch.compose(CONFIG_DIR, "model_chat", overrides)
    if not cfg.mephisto_data_dir:
        cfg.mephisto_data_dir = environment.default_data_dir()
    cfg.mephisto_data_dir = os.path.abspath(os.path.expanduser(cfg.mephisto_data_dir))
    bp = cfg.mephisto.blueprint
    if OmegaConf.is_missing(bp, "model_file"):
        raise launch.CrowdError("no model to evaluate: set mephisto.blueprint.model_file=PATH (zoo: paths too)")
    if OmegaConf.is_missing(bp, "chat_data_folder") or not bp.chat_data_folder:
        bp.chat_data_folder = os.path.join(cfg.mephisto_data_dir, "model_chat")
    if cfg.mephisto.architect._architect_type == "local" and OmegaConf.is_missing(cfg.mephisto.architect, "server_source_path"):
        cfg.mephisto.architect.server_source_path = frontend.ROUTER_BUILD
    if bp.num_turns < 1 or bp.conversations_per_model < 1:
        raise launch.CrowdError("num_turns and conversations_per_model must be at least 1")
    return cfg


def load_models(cfg, names):
    """Each model once (ParlAI's share() for every chat); logs its reply latency on CPU."""
    import torch
    from parlai.core.agents import create_agent_from_shared
    from parlai.crowdsourcing.tasks.model_chat.bot_agent import TurkLikeAgent

    class Args:  # what TurkLikeAgent.get_bot_agents reads
        class blueprint:
            task_model_parallel = False

    extra = cfg.mephisto.blueprint.model_opts or ""
    # as `parlai interactive` does: generation on even if the model was trained without it
    opts = {name: f"--model-file {path} --interactive-mode true {extra}".strip() for name, path in names.items()}
    shared = TurkLikeAgent.get_bot_agents(args=Args, model_opts=opts, no_cuda=not torch.cuda.is_available())
    device = "GPU" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    for name, agent_share in shared.items():
        seconds, replies = [], []

        def probe():  # the first reply also pays one-time costs (lazy init, caches)
            for _ in range(2):
                copy = create_agent_from_shared(agent_share)
                copy.observe({"text": "your persona: i love to read.\n" + LATENCY_PROBE, "episode_done": True})
                started = time.time()
                replies.append(copy.act())
                seconds.append(time.time() - started)

        # in a thread of its own, as every chat's replies are computed (the main thread's
        # OpenMP pool behaves differently on a busy machine: up to 10x slower here)
        thread = threading.Thread(target=probe, name=f"latency-{name}")
        thread.start()
        thread.join()
        reply = replies[-1]
        print(
            f"model {name}: reply latency {seconds[1]:.2f} s ({device}; a reply to a persona and one "
            f"message, after a warm-up reply of {seconds[0]:.2f} s): {reply.get('text', '')[:60]!r}",
            flush=True,
        )
    return shared


def build_shared_state(cfg, shared_models, names):
    from mephisto.abstractions.blueprints.parlai_chat.parlai_chat_blueprint import SharedParlAITaskState

    from parlai_transfertransfo.crowdsourcing.model_chat import blueprint, worlds

    per_model = cfg.mephisto.blueprint.conversations_per_model
    state = SharedParlAITaskState(world_module=worlds)
    state.world_opt.update(
        {
            "shared_bot_agents": shared_models,
            "conversations_needed": {name: per_model for name in names},
            "contexts": blueprint.context_source(cfg.mephisto.blueprint),
        }
    )
    if cfg.mephisto.provider._provider_type == "mturk":
        state.mturk_specific_qualifications = blueprint.mturk_qualifications(cfg.mephisto.blueprint)
    cfg.mephisto.blueprint.num_conversations = per_model * len(names)
    return state


def main(argv):
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    from parlai_transfertransfo.crowdsourcing.model_chat import blueprint

    cfg = load_config(argv)
    model_files = blueprint.listify(cfg.mephisto.blueprint.model_file)
    names = blueprint.model_names(model_files)
    db = launch.prepare(cfg, model_files)
    shared = load_models(cfg, names)
    state = build_shared_state(cfg, shared, names)
    print(f"saving conversations to {cfg.mephisto.blueprint.chat_data_folder}/conversations.jsonl", flush=True)
    launch.run(db, cfg, state, log_rate=cfg.monitoring_log_rate)
    print(f"done: compile the results with `parlai model_chat_results --results-folder {cfg.mephisto.blueprint.chat_data_folder}`")


run = launch.main_guard(main, exit_hard=True)

if __name__ == "__main__":
    run()
