"""The Mephisto blueprint of the ConvAI2-style live chat: its options and shared state.

It is Mephisto's ParlAI chat blueprint with our own options (the `mephisto.blueprint.*`
keys), our prebuilt page instead of a webpack build at launch, and the world options the
worlds in worlds.py read.  The models are loaded once by the launcher (run.py) and every
chat gets a shared copy (ParlAI's share()).
"""
import json
import os
import random
import threading
from dataclasses import dataclass, field
from typing import Any, List

from mephisto.abstractions.blueprints.parlai_chat.parlai_chat_blueprint import (
    ParlAIChatBlueprint,
    ParlAIChatBlueprintArgs,
    SharedParlAITaskState,
)
from mephisto.abstractions.blueprints.parlai_chat.parlai_chat_task_builder import ParlAIChatTaskBuilder
from mephisto.operations.registry import register_mephisto_abstraction
from omegaconf import MISSING, OmegaConf

from parlai_transfertransfo.crowdsourcing import frontend
from parlai_transfertransfo.crowdsourcing.model_chat import worlds

HERE = os.path.dirname(os.path.abspath(__file__))
TASK_CONFIG = os.path.join(HERE, "task_config")
FRONTEND = os.path.join(HERE, "frontend")
BLUEPRINT_TYPE = "transfertransfo_convai2_chat"

# ConvAI2's question (Dinan et al. 2019), then fluency and consistency on 1-5 scales.
DEFAULT_RATINGS = [
    {
        "key": "engagingness",
        "text": "How much did you enjoy talking to this user?",
        "min": 1,
        "max": 4,
        "labels": {"1": "not at all", "4": "a lot"},
    },
    {
        "key": "fluency",
        "text": "How fluent was this user's English: did the messages read naturally?",
        "min": 1,
        "max": 5,
        "labels": {"1": "not fluent", "5": "very fluent"},
    },
    {
        "key": "consistency",
        "text": "How consistent was this user: did the messages fit together and with each other?",
        "min": 1,
        "max": 5,
        "labels": {"1": "often contradictory", "5": "always consistent"},
    },
]


@dataclass
class ConvAI2ChatBlueprintArgs(ParlAIChatBlueprintArgs):
    _blueprint_type: str = BLUEPRINT_TYPE
    _group: str = field(
        default="ConvAI2ChatBlueprint",
        metadata={"help": "ConvAI2-style live chats between crowd workers and transfertransfo models"},
    )
    model_file: Any = field(
        default=MISSING, metadata={"help": "a model file (zoo: paths too), or a list of them to compare"}
    )
    model_opts: str = field(default="", metadata={"help": "extra ParlAI options for every model, e.g. '--inference greedy'"})
    conversations_per_model: int = field(default=10, metadata={"help": "complete chats wanted for each model"})
    num_turns: int = field(default=6, metadata={"help": "messages each side sends before the final questions"})
    min_words: int = field(default=3, metadata={"help": "shorter worker messages are refused"})
    max_resp_time: int = field(default=300, metadata={"help": "seconds a worker has for each message"})
    max_onboard_time: int = field(default=600, metadata={"help": "seconds a worker has for the onboarding check"})
    persona_file: str = field(
        default="", metadata={"help": "personas, one Python list of sentences a line (default: the 17878 packaged training personas)"}
    )
    final_ratings: List[Any] = field(default_factory=lambda: [dict(q) for q in DEFAULT_RATINGS])
    persona_question: str = field(
        default="Which prompt (character) do you think the other user was given for this conversation?",
        metadata={"help": "the persona-detection question; the worker picks one of two personas"},
    )
    annotations_config_path: str = field(
        default="", metadata={"help": "JSON list of per-turn annotation buckets; '' turns them off"}
    )
    annotation_question: str = field(default="Does your partner's last message have any of these problems? (Check all that apply)")
    onboarding_config_path: str = field(default=os.path.join(TASK_CONFIG, "onboarding.json"))
    chat_data_folder: str = field(default=MISSING, metadata={"help": "where conversations.jsonl is written"})
    mturk_min_approval_rate: int = field(default=95, metadata={"help": "live MTurk only: workers' minimum approval rate (%)"})
    mturk_min_approved_hits: int = field(default=500, metadata={"help": "live MTurk only: workers' minimum approved HITs"})
    max_concurrent_responses: int = field(default=1, metadata={"help": "model replies computed at once"})
    task_model_parallel: bool = False
    random_seed: int = field(default=42, metadata={"help": "seeds the personas of the chats"})
    check_acceptability: bool = field(
        default=False,
        metadata={"help": "ParlAI's acceptability checks of the worker's messages; a violation soft-blocks the worker"},
    )
    world_file: str = os.path.join(HERE, "worlds.py")
    task_description_file: str = os.path.join(TASK_CONFIG, "task_description.html")


class PersonaPairs:
    """Each chat's personas: the bot's, the worker's and a distractor, all different, drawn
    from the packaged training personas; shuffled per chat but reproducible from the seed."""

    def __init__(self, personas, seed):
        if len(personas) < 3:
            raise ValueError("the persona file needs at least 3 personas")
        self.personas = personas
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def next_context(self):
        with self.lock:
            bot, worker, distractor = (list(p) for p in self.rng.sample(self.personas, 3))
            bot_index = self.rng.randrange(2)
        options = [distractor, distractor]
        options[bot_index] = bot
        return {
            "bot_persona": bot,
            "worker_persona": worker,
            "persona_options": options,
            "bot_persona_index": bot_index,
        }


def _prebuilt_task_builder():
    class PrebuiltTaskBuilder(ParlAIChatTaskBuilder):
        """Copies the page built at install time; Mephisto's builds it with npm at launch."""

        def build_in_dir(self, build_dir):
            frontend.copy_prebuilt(FRONTEND, build_dir)
            preview = self.args.blueprint.get("preview_source", None)
            if preview:
                import shutil

                shutil.copy2(os.path.expanduser(preview), os.path.join(build_dir, "static", "preview.html"))
            with open(os.path.join(build_dir, self.BUILT_FILE), "w") as f:
                f.write(self.BUILT_MESSAGE)

    return PrebuiltTaskBuilder


@register_mephisto_abstraction()
class ConvAI2ChatBlueprint(ParlAIChatBlueprint):
    ArgsClass = ConvAI2ChatBlueprintArgs
    SharedStateClass = SharedParlAITaskState
    TaskBuilderClass = _prebuilt_task_builder()
    BLUEPRINT_TYPE = BLUEPRINT_TYPE

    @classmethod
    def assert_task_args(cls, args, shared_state):
        if shared_state.world_module is None:
            shared_state.world_module = worlds
        super().assert_task_args(args, shared_state)
        if not shared_state.world_opt.get("shared_bot_agents"):
            raise ValueError("no models loaded: launch through parlai_transfertransfo.crowdsourcing.model_chat")

    def __init__(self, task_run, args, shared_state):
        if shared_state.world_module is None:
            shared_state.world_module = worlds
        super().__init__(task_run, args, shared_state)
        blueprint = args.blueprint
        annotation_buckets = None
        if blueprint.annotations_config_path:
            with open(os.path.expanduser(blueprint.annotations_config_path)) as f:
                annotation_buckets = json.load(f)
        shared_state.world_opt.update(
            {
                "num_turns": blueprint.num_turns,
                "min_words": blueprint.min_words,
                "max_resp_time": blueprint.max_resp_time,
                "final_ratings": OmegaConf.to_container(blueprint.final_ratings, resolve=True),
                "persona_question": blueprint.persona_question,
                "annotation_buckets": annotation_buckets,
                "annotation_question": blueprint.annotation_question,
                "chat_data_folder": blueprint.chat_data_folder,
                "check_acceptability": blueprint.check_acceptability,
                "block_qualification": blueprint.get("block_qualification", None),
                "semaphore": threading.Semaphore(blueprint.max_concurrent_responses),
                "statistics_lock": threading.Lock(),
                "run_statistics": {},
            }
        )
        with open(os.path.expanduser(blueprint.onboarding_config_path)) as f:
            shared_state.onboarding_world_opt.update(
                {"onboarding": json.load(f), "max_onboard_time": blueprint.max_onboard_time}
            )

    def get_frontend_args(self):
        config = super().get_frontend_args()
        config.update({"num_turns": self.args.blueprint.num_turns, "frame_height": 0})
        return config


def context_source(blueprint_args) -> PersonaPairs:
    from parlai_transfertransfo.data.personas import load_personas

    return PersonaPairs(load_personas(blueprint_args.persona_file or None), blueprint_args.random_seed)


def model_names(model_files) -> dict:
    """A short, distinct name for each model file (the results table's rows)."""
    names = {}
    for path in model_files:
        stem = path[len("zoo:"):] if path.startswith("zoo:") else os.path.abspath(path)
        parts = [p for p in stem.replace("\\", "/").split("/") if p]
        name = parts[-2] if len(parts) >= 2 and parts[-1] == "model" else parts[-1]
        base, n = name, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names[name] = path
    return names


# MTurk's system qualification types (the same ids in every account)
APPROVAL_RATE, APPROVED_HITS = "000000000000000000L0", "00000000000000000040"


def mturk_qualifications(blueprint_args):
    """What a live MTurk run asks of workers, besides our onboarding check."""
    return [
        {"QualificationTypeId": qid, "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [value],
         "ActionsGuarded": "DiscoverPreviewAndAccept"}
        for qid, value in ((APPROVAL_RATE, blueprint_args.mturk_min_approval_rate),
                           (APPROVED_HITS, blueprint_args.mturk_min_approved_hits))
        if value > 0
    ]


def listify(value) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
