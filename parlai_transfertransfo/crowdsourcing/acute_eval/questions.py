"""The questions workers answer and the known-answer comparisons of the onboarding.

`task_config/questions.json` holds ACUTE-Eval's optimized wordings (Li, Weston and Roller
2019, "ACUTE-EVAL: Improved Dialogue Evaluation with Optimized Questions and Multi-turn
Comparisons"), chosen by key: engagingness, humanness, interestingness, knowledgeable.
`task_config/onboarding.json` holds comparisons written for this project, each between a
fluent, attentive speaker and a broken, repetitive one, with the side of the right answer;
the answers stay on the server.
"""
import json
import os

from parlai_transfertransfo.crowdsourcing.launch import CrowdError

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "task_config")
QUESTIONS = os.path.join(HERE, "questions.json")
ONBOARDING = os.path.join(HERE, "onboarding.json")
DESCRIPTION = os.path.join(HERE, "task_description.html")
SIDES = ("left", "right")


def _read_json(path, what):
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        raise CrowdError(f"{what} file {path} does not exist") from None
    except ValueError as err:
        raise CrowdError(f"{what} file {path}: not JSON ({err})") from None


def load_questions(path=QUESTIONS) -> dict:
    questions = _read_json(path, "questions")
    for key, q in questions.items() if isinstance(questions, dict) else [(None, None)]:
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or len(q.get("choices") or []) != 2:
            raise CrowdError(f"questions file {path}: each key needs a \"question\" and two \"choices\" ({key})")
    return questions


def choose_questions(keys, questions: dict) -> list:
    keys = [keys] if isinstance(keys, str) else list(keys or [])
    if not keys:
        raise CrowdError(f"no questions: set mephisto.blueprint.questions=[KEY,...] (choose from: {', '.join(questions)})")
    for key in keys:
        if key not in questions:
            raise CrowdError(f"unknown question key '{key}' (choose from: {', '.join(questions)})")
    if len(set(keys)) != len(keys):
        raise CrowdError(f"a question is asked twice: {', '.join(keys)}")
    return keys


def load_onboarding(path, questions: dict) -> dict:
    onboarding = _read_json(path, "onboarding")
    comparisons = onboarding.get("comparisons") if isinstance(onboarding, dict) else None
    if not comparisons:
        raise CrowdError(f"onboarding file {path}: no \"comparisons\"")
    for i, c in enumerate(comparisons):
        ok = (
            isinstance(c, dict)
            and c.get("answer") in SIDES
            and c.get("question") in questions
            and all(isinstance(c.get(side), list) and c[side] for side in SIDES)
        )
        if not ok:
            raise CrowdError(
                f"onboarding file {path}: comparison {i + 1} needs \"id\", a known \"question\", "
                "\"left\" and \"right\" conversations and the \"answer\" (left or right)"
            )
        c.setdefault("id", f"onboarding-{i + 1}")
    return onboarding


def page_comparison(comparison_id, question: dict, left, right) -> dict:
    """What the worker's page gets for one comparison: no model names, no answers."""
    return {
        "id": comparison_id,
        "question": question["question"],
        "choices": list(question["choices"]),
        "left": [{"role": role, "text": text} for role, text in left],
        "right": [{"role": role, "text": text} for role, text in right],
    }


def onboarding_page(onboarding: dict, questions: dict) -> dict:
    return {
        "onboarding": True,
        "intro": onboarding.get("intro", ""),
        "comparisons": [
            page_comparison(c["id"], questions[c["question"]], c["left"], c["right"]) for c in onboarding["comparisons"]
        ],
    }


def onboarding_score(onboarding: dict, judgments) -> tuple:
    """(right answers, comparisons) of a worker's onboarding submission."""
    answers = {c["id"]: SIDES.index(c["answer"]) + 1 for c in onboarding["comparisons"]}
    given = {j.get("id"): j.get("choice") for j in judgments or [] if isinstance(j, dict)}
    return sum(1 for cid, answer in answers.items() if given.get(cid) == answer), len(answers)
