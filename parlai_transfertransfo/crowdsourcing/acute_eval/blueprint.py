"""The Mephisto blueprint of ACUTE-Eval: options, onboarding, who judges what, what is saved.

- Onboarding is Mephisto's own (OnboardingRequired): a worker's first visit shows the
  known-answer comparisons of onboarding.json; a score under `onboarding_threshold` fails the
  qualification, and the worker never sees a real comparison (on MTurk the task is hidden).
- Units are filled as workers arrive by ParlAI's AcuteEvalRunner (its queue: a worker never
  gets a conversation twice for one question; a returned unit's comparisons go back to the
  queue), fed with our pairings (pairings.py) instead of its own random sides.
- Workers' pages get conversations, questions and comparison ids only: the model names and
  the onboarding answers stay here.  Each judgment (the winner, the sides, the conversations'
  log lines, the worker's reason) is appended to `judgments.jsonl` as it is submitted;
  onboarding outcomes go to `onboarding.jsonl`.
"""
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from mephisto.abstractions.blueprint import Blueprint, BlueprintArgs, SharedTaskState, TaskBuilder
from mephisto.abstractions.blueprints.abstract.static_task.static_agent_state import StaticAgentState
from mephisto.abstractions.blueprints.mixins.onboarding_required import (
    OnboardingRequired,
    OnboardingRequiredArgs,
    OnboardingSharedState,
)
from mephisto.data_model.assignment import InitializationData
from mephisto.operations.registry import register_mephisto_abstraction
from mephisto.utils.logger_core import get_logger
from omegaconf import MISSING
from parlai.crowdsourcing.tasks.acute_eval.acute_eval_runner import AcuteEvalRunner

from parlai_transfertransfo.crowdsourcing import frontend
from parlai_transfertransfo.crowdsourcing.acute_eval import questions as task_config

HERE = os.path.dirname(os.path.abspath(__file__))
FRONTEND = os.path.join(HERE, "frontend")
BLUEPRINT_TYPE = "transfertransfo_acute_eval"
JUDGMENTS, ONBOARDING_OUTCOMES, PAIRINGS = "judgments.jsonl", "onboarding.jsonl", "pairings.jsonl"
logger = get_logger(name=__name__)
_SAVE_LOCK = threading.Lock()


@dataclass
class AcuteEvalArgs(OnboardingRequiredArgs, BlueprintArgs):
    _blueprint_type: str = BLUEPRINT_TYPE
    _group: str = field(
        default="TransfertransfoAcuteEval",
        metadata={"help": "ACUTE-Eval: workers compare two models' self-chats side by side"},
    )
    selfchat_logs: List[str] = field(
        default_factory=list,
        metadata={"help": "each model as NAME:LOG, LOG being F or F.jsonl of `parlai self_chat --outfile F`"},
    )
    selfchat_models: str = field(
        default="",
        metadata={"help": "a JSON file of models to self-chat first: {NAME: {self_chat options}} (selfchats.py)"},
    )
    selfchat_count: int = field(default=10, metadata={"help": "self-chats per model of selfchat_models"})
    selfchat_max_turns: int = field(default=6, metadata={"help": "--selfchat-max-turns of those self-chats"})
    model_pairs: List[str] = field(
        default_factory=list, metadata={"help": "matchups as MODEL_A:MODEL_B (default: every two models)"}
    )
    questions: List[str] = field(
        default_factory=lambda: ["engagingness"],
        metadata={"help": "question keys: engagingness, humanness, interestingness, knowledgeable"},
    )
    questions_path: str = field(default=task_config.QUESTIONS, metadata={"help": "the questions' wordings by key"})
    pairs_per_question: Optional[int] = field(
        default=None,
        metadata={"help": "comparisons per question and matchup (default: as many as the smaller log's conversations)"},
    )
    speaker_index: int = field(
        default=0, metadata={"help": "the judged speaker of each conversation: 0 = the first to speak (the -mf model)"}
    )
    annotations_per_pair: int = field(default=1, metadata={"help": "judgments wanted of each comparison"})
    subtasks_per_unit: int = field(default=5, metadata={"help": "comparisons per HIT"})
    min_reason_words: int = field(default=3, metadata={"help": "shortest reason a worker may give, in words"})
    onboarding_path: str = field(default=task_config.ONBOARDING, metadata={"help": "known-answer comparisons"})
    onboarding_threshold: float = field(
        default=0.75, metadata={"help": "share of onboarding comparisons a worker must get right"}
    )
    results_folder: str = field(default=MISSING, metadata={"help": "where judgments.jsonl goes"})
    random_seed: int = field(default=42, metadata={"help": "seeds the pairings and the order of the queue"})
    mturk_min_approval_rate: int = field(default=95, metadata={"help": "live MTurk only: workers' minimum approval rate (%)"})
    mturk_min_approved_hits: int = field(default=500, metadata={"help": "live MTurk only: workers' minimum approved HITs"})
    task_description_file: str = field(default=task_config.DESCRIPTION)


@dataclass
class AcuteEvalSharedState(OnboardingSharedState, SharedTaskState):
    comparisons: List[Any] = field(default_factory=list)  # pairings with their page views
    onboarding: Dict[str, Any] = field(default_factory=dict)  # onboarding.json, answers included


def append_record(folder, name, record):
    os.makedirs(folder, exist_ok=True)
    with _SAVE_LOCK, open(os.path.join(folder, name), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class PrebuiltAcuteBuilder(TaskBuilder):
    """Copies the worker's page built at install time (frontend/build) into the server."""

    BUILT_FILE = "done.built"

    def build_in_dir(self, build_dir):
        frontend.copy_prebuilt(FRONTEND, build_dir)
        with open(os.path.join(build_dir, self.BUILT_FILE), "w") as f:
            f.write("built!")


class AcuteRunner(AcuteEvalRunner):
    """ParlAI's ACUTE-Eval queue with our pairings, our onboarding and our records."""

    def __init__(self, task_run, args, shared_state):
        self.comparisons = shared_state.comparisons
        self.results_folder = args.blueprint.results_folder
        super().__init__(task_run, args, shared_state)

    def _load_conversation_data(self):
        for c in self.comparisons:
            self.desired_tasks.append(
                {"task_specs": c["page"], "pairing_dict": {"dialogue_ids": c["dialogue_ids"]}, "pair_id": c["pair_id"]}
            )

    def get_init_data_for_agent(self, agent):
        """The worker's comparisons, chosen when they first load the unit (kept on reload)."""
        init_state = agent.state.get_init_state()
        if init_state is not None:
            return init_state
        worker_id = agent.get_worker().db_id
        tasks = self.get_new_task_data(worker_id)
        page = {"onboarding": False, "comparisons": [t["task_specs"] for t in tasks]}
        agent.state.set_init_state(page)
        self.unit_agent_map[agent.get_unit().db_id] = (worker_id, tasks)
        return page

    def run_onboarding(self, agent):
        agent.await_submit(self.assignment_duration_in_seconds)

    def cleanup_onboarding(self, agent):
        return

    def run_unit(self, unit, agent):
        agent.await_submit(timeout=self.assignment_duration_in_seconds)
        worker_id, tasks = self.unit_agent_map.pop(unit.db_id, (None, []))
        assigned = {t["pair_id"] for t in tasks}
        saved = 0
        for judgment in submitted_judgments(agent.state.get_data()):
            pair_id, choice = judgment.get("id"), judgment.get("choice")
            if pair_id not in assigned or choice not in (1, 2):
                logger.warning(f"{unit}: a judgment that was not asked for, or without a choice: {judgment}")
                continue
            assigned.discard(pair_id)
            append_record(self.results_folder, JUDGMENTS, judgment_record(self.comparisons[pair_id], judgment, unit, agent))
            saved += 1
        if assigned:  # not answered: back to the queue for another worker
            logger.warning(f"{unit}: {len(assigned)} comparison(s) submitted without an answer")
            self.requeue_task_data(worker_id, [t for t in tasks if t["pair_id"] in assigned])
        logger.info(f"{unit}: {saved} judgment(s) saved")


def submitted_judgments(data) -> list:
    outputs = (data or {}).get("outputs") or {}
    final = outputs.get("final_data", outputs) if isinstance(outputs, dict) else {}
    judgments = final.get("judgments") if isinstance(final, dict) else None
    return [j for j in judgments if isinstance(j, dict)] if isinstance(judgments, list) else []


def judgment_record(comparison, judgment, unit, agent) -> dict:
    left, right = comparison["left"], comparison["right"]
    winner, loser = (left, right) if judgment["choice"] == 1 else (right, left)
    reason = judgment.get("reason")
    return {
        "question": comparison["question"],
        "pair_id": comparison["pair_id"],
        "winner": winner["model"],
        "loser": loser["model"],
        "chosen_side": "left" if judgment["choice"] == 1 else "right",
        "reason": reason if isinstance(reason, str) else "",
        "seconds": judgment.get("seconds"),
        "left": left,
        "right": right,
        "worker": agent.get_worker().worker_name,
        "unit": unit.db_id,
        "assignment": unit.assignment_id,
        "time": time.time(),
    }


@register_mephisto_abstraction()
class AcuteEvalBlueprint(OnboardingRequired, Blueprint):
    AgentStateClass = StaticAgentState
    OnboardingAgentStateClass = StaticAgentState
    TaskBuilderClass = PrebuiltAcuteBuilder
    TaskRunnerClass = AcuteRunner
    ArgsClass = AcuteEvalArgs
    SharedStateClass = AcuteEvalSharedState
    BLUEPRINT_TYPE = BLUEPRINT_TYPE

    @classmethod
    def assert_task_args(cls, args, shared_state):
        super().assert_task_args(args, shared_state)
        if not shared_state.comparisons:
            raise ValueError("no comparisons: launch through parlai_transfertransfo.crowdsourcing.acute_eval")

    def get_frontend_args(self):
        with open(os.path.expanduser(self.args.blueprint.task_description_file), encoding="utf-8") as f:
            description = f.read()
        return {
            "task_description": description,
            "frame_height": 0,
            "block_mobile": False,
            "min_reason_words": self.args.blueprint.min_reason_words,
        }

    def get_initialization_data(self):
        wanted = len(self.shared_state.comparisons) * self.args.blueprint.annotations_per_pair
        units = math.ceil(wanted / self.args.blueprint.subtasks_per_unit)
        return [InitializationData(shared={}, unit_data=[{}]) for _ in range(units)]

    def get_onboarding_data(self, worker_id):
        return self.shared_state.onboarding_data

    def validate_onboarding(self, worker, onboarding_agent) -> bool:
        """A share of right answers of at least onboarding_threshold passes; saved either way."""
        judgments = submitted_judgments(onboarding_agent.state.get_data())
        right, total = task_config.onboarding_score(self.shared_state.onboarding, judgments)
        passed = total > 0 and right / total >= self.args.blueprint.onboarding_threshold
        append_record(
            self.args.blueprint.results_folder,
            ONBOARDING_OUTCOMES,
            {"worker": worker.worker_name, "right": right, "comparisons": total, "passed": passed,
             "judgments": judgments, "time": time.time()},
        )
        return passed
