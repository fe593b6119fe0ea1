"""Compile ACUTE-Eval judgments into win rates: per question, each model against each other.

Reads the `judgments.jsonl` the launcher wrote (one judgment a line: the question, the
winner and the loser, the sides, the worker's reason).  For each question and matchup, each
model's wins out of the judgments, its win rate with Wilson's 95% CI, and the exact two-sided
binomial test of that rate against 50% (`scipy.stats.binomtest`: ParlAI's analysis imports
`binom_test`, gone since SciPy 1.12).  Writes results.md, results.csv, win_rates.png and
reasons.csv (every judgment with the worker's reason, as given).
"""
import os
from collections import OrderedDict
from typing import List

from parlai_transfertransfo.crowdsourcing import stats
from parlai_transfertransfo.errors import TransfertransfoError

JUDGMENTS = "judgments.jsonl"
COLUMNS = ["question", "model", "vs", "wins", "judgments", "win rate [95% CI]", "p (binomial)"]
REASON_COLUMNS = ["question", "pair_id", "winner", "loser", "chosen_side", "reason", "worker", "seconds"]
_REQUIRED = ("question", "winner", "loser")


def find_judgments(path: str) -> str:
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        path = os.path.join(path, JUDGMENTS)
    if not os.path.isfile(path):
        raise TransfertransfoError(f"{path}: no such file (the launcher writes {JUDGMENTS} in its results folder)")
    return path


def load(path: str) -> List[dict]:
    path = find_judgments(path)
    records = stats.read_jsonl(
        path, lambda r: all(isinstance(r.get(k), str) for k in _REQUIRED), "not a judgment (no question/winner/loser)"
    )
    if not records:
        raise TransfertransfoError(f"{path}: no judgments yet")
    return records


def summarize(records: List[dict]) -> List[dict]:
    """One row per question, matchup and model (both models of a matchup, the first named
    first): wins, judgments, win rate and the binomial p-value (the same for both)."""
    matchups = OrderedDict()
    for r in records:
        pair = tuple(sorted((r["winner"], r["loser"])))
        wins = matchups.setdefault((r["question"], pair), {pair[0]: 0, pair[1]: 0})
        wins[r["winner"]] += 1
    rows = []
    for (question, pair), wins in matchups.items():
        n = sum(wins.values())
        for model, other in (pair, pair[::-1]):
            rate = stats.proportion_ci(wins[model], n)
            rows.append(
                {
                    "question": question,
                    "model": model,
                    "vs": other,
                    "wins": wins[model],
                    "judgments": n,
                    "win rate [95% CI]": rate.format(digits=0, percent=True),
                    "p (binomial)": stats.format_p(stats.binomial_test(wins[model], n)),
                    "win_rate": rate.value,
                    "ci_low": rate.low,
                    "ci_high": rate.high,
                }
            )
    return rows


def compile_results(results: str, output_folder: str) -> str:
    records = load(results)
    rows = summarize(records)
    text = "## ACUTE-Eval: win rates\n\n" + stats.markdown_table(rows, COLUMNS)
    text += (
        "\nwin rate: Wilson 95% CI; p: exact two-sided binomial test against 50% "
        f"({len(records)} judgments by {len({r.get('worker') for r in records})} worker(s)).\n"
    )
    os.makedirs(output_folder, exist_ok=True)
    stats.write_markdown(os.path.join(output_folder, "results.md"), text)
    stats.write_csv(os.path.join(output_folder, "results.csv"), rows, COLUMNS + ["win_rate", "ci_low", "ci_high"])
    stats.write_csv(os.path.join(output_folder, "reasons.csv"), records, REASON_COLUMNS)
    stats.plot_win_rates(os.path.join(output_folder, "win_rates.png"), "ACUTE-Eval win rates", rows)
    return text
