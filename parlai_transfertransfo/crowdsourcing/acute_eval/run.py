"""Launch ACUTE-Eval of two (or more) models' self-chats on Mephisto.

    python -m parlai_transfertransfo.crowdsourcing.acute_eval \\
        mephisto/architect=local mephisto/provider=mock \\
        'mephisto.blueprint.selfchat_logs=[zoo:selfchats/zoo,backbone:selfchats/backbone]' \\
        'mephisto.blueprint.questions=[engagingness,humanness]'

Or in one command from the models themselves, self-chatted first (as ParlAI's fast_acute does;
selfchats.py): 'mephisto.blueprint.selfchat_models=models.json' mephisto.blueprint.selfchat_count=10.
Hydra overrides as in ParlAI's crowdsourcing tasks (hydra_configs/conf/acute_eval.yaml and
blueprint.py list the keys); `mephisto/provider=mturk_sandbox` or `mturk` with
`mephisto.provider.requester_name=NAME` runs it for real.  The logs, the matchups, the
questions and the numbers are checked before anything starts.  Then `parlai
acute_eval_results --results-folder DIR` compiles the judgments.
"""
import os
from dataclasses import dataclass, field
from typing import Any, List

from mephisto.operations.hydra_config import TaskConfig

from parlai_transfertransfo.crowdsourcing import environment, frontend, launch
from parlai_transfertransfo.crowdsourcing.acute_eval import logs, pairings, selfchats
from parlai_transfertransfo.crowdsourcing.acute_eval import questions as task_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hydra_configs")


@dataclass
class AcuteEvalConfig(TaskConfig):
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"conf": "acute_eval"}])
    mephisto_data_dir: str = field(
        default="", metadata={"help": "this evaluation's Mephisto database and files (default: {datapath}/mephisto)"}
    )
    monitoring_log_rate: int = 30


def load_config(overrides):
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # the blueprint must be registered before Hydra resolves its config group
    from parlai_transfertransfo.crowdsourcing.acute_eval import blueprint  # noqa: F401

    ConfigStore.instance().store(name="acute_eval", node=AcuteEvalConfig)
    cfg = launch.compose(CONFIG_DIR, "acute_eval", overrides)
    if not cfg.mephisto_data_dir:
        cfg.mephisto_data_dir = environment.default_data_dir()
    cfg.mephisto_data_dir = os.path.abspath(os.path.expanduser(cfg.mephisto_data_dir))
    bp = cfg.mephisto.blueprint
    if OmegaConf.is_missing(bp, "results_folder") or not bp.results_folder:
        bp.results_folder = os.path.join(cfg.mephisto_data_dir, "acute_eval")
    bp.results_folder = os.path.abspath(os.path.expanduser(bp.results_folder))
    if cfg.mephisto.architect._architect_type == "local" and OmegaConf.is_missing(cfg.mephisto.architect, "server_source_path"):
        cfg.mephisto.architect.server_source_path = frontend.ROUTER_BUILD
    for key in ("subtasks_per_unit", "annotations_per_pair", "selfchat_count", "selfchat_max_turns"):
        if bp[key] < 1:
            raise launch.CrowdError(f"{key} must be at least 1 (got {bp[key]})")
    if bp.speaker_index < 0:
        raise launch.CrowdError(f"speaker_index must be 0 or more (got {bp.speaker_index})")
    return cfg


def build_comparisons(bp):
    """Everything checked (models to self-chat first, self-chatted), then the pairings with
    each comparison's page: (comparisons, onboarding, questions)."""
    questions = task_config.load_questions(bp.questions_path)
    keys = task_config.choose_questions(list(bp.questions), questions)
    onboarding = task_config.load_onboarding(bp.onboarding_path, questions)
    logs_by_model = logs.parse_selfchat_logs(list(bp.selfchat_logs or []))
    planned = selfchats.plan(bp.selfchat_models, bp.results_folder, taken=logs_by_model)
    model_pairs = pairings.parse_model_pairs(list(bp.model_pairs or []), [*logs_by_model, *planned])
    needed = {m for pair in model_pairs for m in pair}
    conversations = {m: logs.read_log(path, bp.speaker_index) for m, path in logs_by_model.items() if m in needed}
    counts = {m: len(c) for m, c in conversations.items()}
    pairings.check_enough({**counts, **{m: bp.selfchat_count for m in planned}}, model_pairs, bp.pairs_per_question)
    made = selfchats.run_missing({m: planned[m] for m in planned if m in needed}, bp.selfchat_count, bp.selfchat_max_turns)
    conversations.update({m: logs.read_log(path, bp.speaker_index) for m, path in made.items()})
    n = pairings.check_enough({m: len(c) for m, c in conversations.items()}, model_pairs, bp.pairs_per_question)
    comparisons = []
    for p in pairings.make_pairings(conversations, model_pairs, keys, n, bp.random_seed):
        left = conversations[p["left"]["model"]][p["left"]["conversation"]]
        right = conversations[p["right"]["model"]][p["right"]["conversation"]]
        for side, conv in (("left", left), ("right", right)):
            p[side].update({"log": conv.log, "line": conv.line})
        p["page"] = task_config.page_comparison(p["pair_id"], questions[p["question"]], left.turns, right.turns)
        p["dialogue_ids"] = [f"{p['question']}|{s['model']}|{s['conversation']}" for s in (p["left"], p["right"])]
        comparisons.append(p)
    return comparisons, onboarding, questions


def build_shared_state(cfg, comparisons, onboarding, questions):
    from parlai_transfertransfo.crowdsourcing.acute_eval import blueprint
    from parlai_transfertransfo.crowdsourcing.model_chat.blueprint import mturk_qualifications

    state = blueprint.AcuteEvalSharedState(
        comparisons=comparisons,
        onboarding=onboarding,
        onboarding_data=task_config.onboarding_page(onboarding, questions),
    )
    if cfg.mephisto.provider._provider_type == "mturk":
        state.mturk_specific_qualifications = mturk_qualifications(cfg.mephisto.blueprint)
    return state


def write_pairings(folder, comparisons):
    import json

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "pairings.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for c in comparisons:
            f.write(json.dumps({k: c[k] for k in ("pair_id", "question", "left", "right")}) + "\n")
    return path


def main(argv):
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    cfg = load_config(argv)
    bp = cfg.mephisto.blueprint
    launch.preflight(cfg)  # a busy port or missing credentials: before any self-chat
    comparisons, onboarding, questions = build_comparisons(bp)
    db = launch.prepare(cfg)
    state = build_shared_state(cfg, comparisons, onboarding, questions)
    matchups = sorted({tuple(sorted((c["left"]["model"], c["right"]["model"]))) for c in comparisons})
    print(
        f"{len(comparisons)} comparisons ({', '.join(bp.questions)}; "
        f"{', '.join(f'{a} vs {b}' for a, b in matchups)}), {bp.subtasks_per_unit} per HIT",
        flush=True,
    )
    write_pairings(bp.results_folder, comparisons)
    print(f"saving judgments to {bp.results_folder}/judgments.jsonl", flush=True)
    launch.run(db, cfg, state, log_rate=cfg.monitoring_log_rate)
    print(f"done: compile the results with `parlai acute_eval_results --results-folder {bp.results_folder}`")


run = launch.main_guard(main, exit_hard=True)

if __name__ == "__main__":
    run()
