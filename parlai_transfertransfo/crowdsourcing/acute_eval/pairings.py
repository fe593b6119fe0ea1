"""Which conversations workers compare: pairings balanced over conversations and sides.

For every question and every matchup of two models, `pairs_per_question` comparisons:
- over conversations: each comparison takes, from each model's log, a conversation used least
  so far (ties broken at random), so within a question no conversation appears twice and over
  all questions each is used as often as any other, give or take one;
- over sides: each model is on the left in half of a matchup's comparisons (give or take one,
  the odd one alternating between models from question to question), in a random order.
Reproducible from the seed.  Model names stay on the server: workers see "Speaker 1/2".

    pairings = make_pairings({"a": convs_a, "b": convs_b}, [("a", "b")], ["engagingness"], 10, seed=42)
"""
import itertools
import random
from typing import Dict, List, Optional, Sequence, Tuple

from parlai_transfertransfo.crowdsourcing.launch import CrowdError


def parse_model_pairs(value, models: Sequence[str]) -> List[Tuple[str, str]]:
    """`["a:b", ...]` (default: every two models) -> [(a, b)]; names must have a log."""
    if not value:
        if len(models) < 2:
            raise CrowdError(f"ACUTE-Eval compares two models: selfchat_logs names {len(models)} ({', '.join(models)})")
        return list(itertools.combinations(models, 2))
    pairs = []
    for item in [value] if isinstance(value, str) else value:
        parts = str(item).split(":")
        if len(parts) != 2 or not all(parts):
            raise CrowdError(f"model pair '{item}': write it as MODEL_A:MODEL_B")
        for name in parts:
            if name not in models:
                raise CrowdError(
                    f"model pair '{item}': no self-chat log for model '{name}' "
                    f"(selfchat_logs names: {', '.join(models)})"
                )
        if parts[0] == parts[1]:
            raise CrowdError(f"model pair '{item}': a model cannot be compared with itself")
        if tuple(parts) in pairs or tuple(reversed(parts)) in pairs:
            raise CrowdError(f"model pair '{item}' is given twice")
        pairs.append(tuple(parts))
    return pairs


def check_enough(counts: Dict[str, int], model_pairs, pairs_per_question: Optional[int]) -> int:
    """The number of comparisons per question and matchup (default: the smaller log's size)."""
    needed = {m for pair in model_pairs for m in pair}
    smallest = min(counts[m] for m in needed)
    if pairs_per_question is None:
        return smallest
    if pairs_per_question < 1:
        raise CrowdError(f"pairs_per_question must be at least 1 (got {pairs_per_question})")
    for model in sorted(needed):
        if counts[model] < pairs_per_question:
            raise CrowdError(
                f"model '{model}' has {counts[model]} conversation(s) in its self-chat log, fewer than "
                f"pairs_per_question={pairs_per_question}: self-chat more (--num-self-chats) or ask for fewer pairs"
            )
    return pairs_per_question


def make_pairings(conversations: Dict[str, list], model_pairs, questions, pairs_per_question, seed=42) -> List[dict]:
    rng = random.Random(seed)
    used = {model: [0] * len(convs) for model, convs in conversations.items()}
    pairings = []
    extra_left = {pair: 0 for pair in model_pairs}  # who got the odd comparison on the left last
    for question in questions:
        for pair in model_pairs:
            a, b = pair
            picks = {m: _least_used(used[m], pairs_per_question, rng) for m in pair}
            a_left = [True] * (pairs_per_question // 2) + [False] * (pairs_per_question // 2)
            if pairs_per_question % 2:
                a_left.append(extra_left[pair] == 0)
                extra_left[pair] ^= 1
            rng.shuffle(a_left)
            for i in range(pairs_per_question):
                sides = [(a, picks[a][i]), (b, picks[b][i])]
                if not a_left[i]:
                    sides.reverse()
                (left, left_i), (right, right_i) = sides
                pairings.append(
                    {
                        "pair_id": len(pairings),
                        "question": question,
                        "left": {"model": left, "conversation": left_i},
                        "right": {"model": right, "conversation": right_i},
                    }
                )
    return pairings


def _least_used(counts: List[int], n: int, rng: random.Random) -> List[int]:
    order = list(range(len(counts)))
    rng.shuffle(order)
    chosen = sorted(order, key=lambda i: counts[i])[:n]  # stable: random among equally used
    for i in chosen:
        counts[i] += 1
    rng.shuffle(chosen)
    return chosen

