"""The ConvAI2 human evaluation as ParlAI crowdsourcing worlds.

A worker first passes the onboarding check.  Then each chat: the worker reads their own
persona (a packaged training persona, never the bot's), the bot observes its persona, they
talk for `num_turns` turns each (the worker starts; empty or short messages are refused),
and the worker answers the final questions: the ratings (engagingness 1-4, fluency and
consistency 1-5 by default) and which of two personas was the bot's.  Every chat is saved
(conversations.jsonl, one line each): a chat cut short by a disconnect is saved with
`"status": "incomplete"` and never counted by the results command.

Mephisto's ParlAI runner calls make_onboarding_world / make_world / validate_onboarding /
get_world_params of this module (the blueprint hands it over as the world module).
"""
import json
import os
import threading
import time

from parlai.core.agents import create_agent_from_shared
from parlai.crowdsourcing.tasks.model_chat.bot_agent import TurkLikeAgent
from parlai.crowdsourcing.utils.worlds import CrowdOnboardWorld, CrowdTaskWorld

COORDINATOR = "Coordinator"
WORKER_NAME = "You"
BOT_NAME = "Partner"
ONBOARD_PASS, ONBOARD_FAIL = "pass", "fail"
_SAVE_LOCK = threading.Lock()


def coordinator(text, **task_data):
    return {"id": COORDINATOR, "text": text, "episode_done": False, "task_data": task_data}


def save_conversation(folder, record):
    """One JSON line per conversation, appended under a lock (many workers at once)."""
    os.makedirs(folder, exist_ok=True)
    with _SAVE_LOCK, open(os.path.join(folder, "conversations.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class ConvAI2OnboardWorld(CrowdOnboardWorld):
    """Multiple-choice questions about the task; the answers never leave the server."""

    def __init__(self, opt, agent):
        super().__init__(opt, agent)
        self.config = opt["onboarding"]
        self.max_time = opt.get("max_onboard_time", 600)
        self.status = None
        self.answers = None

    def parley(self):
        questions = [{k: q[k] for k in ("question", "options")} for q in self.config["questions"]]
        self.agent.observe(coordinator("", onboarding={"intro": self.config["intro"], "questions": questions}))
        act = self.agent.act(timeout=self.max_time)
        self.answers = (act or {}).get("task_data", {}).get("onboarding_answers")
        expected = [q["answer"] for q in self.config["questions"]]
        self.status = ONBOARD_PASS if self.answers == expected else ONBOARD_FAIL
        self.agent.observe(
            coordinator("", onboarding={"result": self.status, "questions": questions}, onboarding_status=self.status)
        )
        self.episodeDone = True

    def get_custom_task_data(self):
        return {"onboarding_answers": self.answers, "onboarding_status": self.status}


def validate_onboarding(data):
    """Mephisto's verdict on a submitted onboarding: the status our world sent last."""
    for message in reversed(data.get("outputs", {}).get("messages", [])):
        status = (message or {}).get("task_data", {}).get("onboarding_status")
        if status is not None:
            return status == ONBOARD_PASS
    return False


class ConvAI2ChatWorld(CrowdTaskWorld):
    """One worker chats with one bot for num_turns turns each, then rates it."""

    def __init__(self, opt, agent, bot, context):
        super().__init__(opt, agent)
        self.opt = opt
        self.bot = bot
        self.context = context
        self.num_turns = opt["num_turns"]
        self.min_words = opt["min_words"]
        self.max_resp_time = opt["max_resp_time"]
        self.dialog = []
        self.turns_done = 0
        self.final_answers = None
        self.status = "incomplete"
        self.violations = None
        self.saved = False
        self.started = time.time()
        self.agent.agent_id = WORKER_NAME

    # --------------------------------------------------------------------------- the chat
    def parley(self):
        if self.turns_done == 0 and not self.dialog:
            self._start()
        if self.turns_done < self.num_turns:
            self._one_turn()
        else:
            self._final_questions()

    def _start(self):
        self.agent.observe(
            coordinator(
                f"You have a character of your own: please play it. Say hello to your partner and "
                f"chat for {self.num_turns} messages each.",
                worker_persona=self.context["worker_persona"],
                num_turns=self.num_turns,
                turns_done=0,
                min_words=self.min_words,
                annotation_buckets=self.opt.get("annotation_buckets"),
                annotation_question=self.opt.get("annotation_question"),
                annotate_partner_message=False,
                onboarding=None,
            )
        )
        persona_text = "\n".join("your persona: " + line for line in self.context["bot_persona"])
        self.bot_persona_message = persona_text

    def _worker_message(self):
        """The worker's next message; short or empty ones are refused and asked again."""
        while True:
            act = self.agent.act(timeout=self.max_resp_time)
            text = (act.get("text") or "").strip()
            words = len(text.split())
            if words >= self.min_words:
                return act, text
            self.agent.observe(
                coordinator(f"Please write at least {self.min_words} words: your message was not sent to your partner.")
            )

    def _one_turn(self):
        act, text = self._worker_message()
        annotations = act.get("task_data", {}).get("annotations")
        if annotations is not None and self.dialog and self.dialog[-1]["agent_idx"] == 1:
            self.dialog[-1]["annotations"] = annotations
        self.dialog.append({"agent_idx": 0, "id": "human", "text": text})
        first = len(self.dialog) == 1
        observation = {
            "id": "human",
            "text": (self.bot_persona_message + "\n" + text) if first else text,
            "episode_done": False,
        }
        self.bot.observe(observation)
        started = time.time()
        reply = self.bot.act()
        self.dialog.append(
            {"agent_idx": 1, "id": "bot", "text": reply["text"], "reply_seconds": round(time.time() - started, 3)}
        )
        self.turns_done += 1
        done = self.turns_done >= self.num_turns
        self.agent.observe(
            {
                "id": BOT_NAME,
                "text": reply["text"],
                "episode_done": False,
                "task_data": {"turns_done": self.turns_done, "annotate_partner_message": not done},
            }
        )

    def _final_questions(self):
        ratings = self.opt["final_ratings"]
        options = self.context["persona_options"]
        self.agent.observe(
            coordinator(
                "Thank you! Now please answer the questions below.",
                final_questions={
                    "ratings": ratings,
                    "persona_question": self.opt["persona_question"],
                    "persona_options": options,
                },
                annotate_partner_message=False,
            )
        )
        while True:
            act = self.agent.act(timeout=self.max_resp_time)
            task_data = act.get("task_data", {})
            answers = task_data.get("final_answers")
            problem = self._check_answers(answers, ratings, options)
            if problem is None:
                break
            self.agent.observe(coordinator(f"Please check your answers: {problem}"))
        if task_data.get("annotations") is not None and self.dialog[-1]["agent_idx"] == 1:
            self.dialog[-1]["annotations"] = task_data["annotations"]
        self.final_answers = {
            "ratings": {q["key"]: int(answers["ratings"][q["key"]]) for q in ratings},
            "persona_choice": int(answers["persona_choice"]),
        }
        self.status = "complete"
        if self.opt.get("check_acceptability"):
            self._check_acceptability()
        self._save()
        self.episodeDone = True

    def _check_acceptability(self):
        """ParlAI's checks of the worker's messages (too short, all caps, repeated, offensive
        words); a worker with a violation gets the block qualification, as in model_chat."""
        from parlai.crowdsourcing.utils.acceptability import AcceptabilityChecker

        messages = [d["text"] for d in self.dialog if d["agent_idx"] == 0]
        self.violations = AcceptabilityChecker().check_messages(
            messages, is_worker_0=False, violation_types=["min_words", "all_caps", "exact_match", "safety"]
        )
        block = self.opt.get("block_qualification")
        if self.violations and block:
            self.agent.mephisto_agent.get_worker().grant_qualification(block, 1)

    @staticmethod
    def _check_answers(answers, ratings, options):
        if not isinstance(answers, dict) or not isinstance(answers.get("ratings"), dict):
            return "every question needs an answer."
        for q in ratings:
            value = answers["ratings"].get(q["key"])
            if not isinstance(value, int) or not q["min"] <= value <= q["max"]:
                return f"'{q['text']}' needs a rating from {q['min']} to {q['max']}."
        choice = answers.get("persona_choice")
        if not isinstance(choice, int) or not 0 <= choice < len(options):
            return "please pick one of the two characters."
        return None

    # ------------------------------------------------------------------------ the record
    def record(self):
        answers = self.final_answers
        choice = answers["persona_choice"] if answers else None
        bot_index = self.context["bot_persona_index"]
        mephisto_agent = self.agent.mephisto_agent
        return {
            "status": self.status,
            "model": self.bot.worker_id,
            "model_file": self.bot.model_agent.opt.get("model_file"),
            "worker": mephisto_agent.get_worker().worker_name,
            "unit": mephisto_agent.get_unit().db_id,
            "task_run": mephisto_agent.task_run_id,
            "seconds": round(time.time() - self.started, 1),
            "num_turns": self.num_turns,
            "worker_persona": self.context["worker_persona"],
            "bot_persona": self.context["bot_persona"],
            "persona_options": self.context["persona_options"],
            "bot_persona_index": bot_index,
            "ratings": answers["ratings"] if answers else None,
            "persona_choice": choice,
            "persona_correct": (choice == bot_index) if answers else None,
            "acceptability_violations": self.violations,
            # ParlAI's conversation format: one list of [speaker, partner] exchanges
            "dialog": [
                [{"id": d["id"], "text": d["text"], **{k: d[k] for k in ("annotations", "reply_seconds") if k in d}}]
                for d in self.dialog
            ],
        }

    def _save(self):
        if self.saved:
            return
        self.saved = True
        save_conversation(self.opt["chat_data_folder"], self.record())

    def get_custom_task_data(self):
        return self.record()

    def shutdown(self):
        """Also runs when the worker disconnected: the partial chat is saved as incomplete."""
        if not self.saved and self.dialog:
            self._save()
        if self.status == "complete":
            with self.opt["statistics_lock"]:
                stats = self.opt["run_statistics"]
                stats[self.bot.worker_id] = stats.get(self.bot.worker_id, 0) + 1
        super().shutdown()

    def episode_done(self):
        return self.episodeDone


# --------------------------------------------------------------- Mephisto's world module API
def make_onboarding_world(opt, agent):
    return ConvAI2OnboardWorld(opt, agent)


def make_world(opt, agents):
    context = opt["contexts"].next_context()
    model_name = choose_model(opt)
    shared = opt["shared_bot_agents"][model_name]
    bot = TurkLikeAgent(
        opt,
        model_name=model_name,
        model_agent=create_agent_from_shared(shared),
        num_turns=opt["num_turns"],
        semaphore=opt["semaphore"],
    )
    return ConvAI2ChatWorld(opt, agents[0], bot, context)


def choose_model(opt):
    """The model with the most conversations still needed (ParlAI model_chat's rule)."""
    with opt["statistics_lock"]:
        needed = opt["conversations_needed"]
        done = opt["run_statistics"]
        return max(needed, key=lambda name: (needed[name] - done.get(name, 0), -list(needed).index(name)))


def get_world_params():
    return {"agent_count": 1}

