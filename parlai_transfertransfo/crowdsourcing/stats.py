"""Statistics and report files for human evaluations (live chats here, ACUTE-Eval too).

Small, documented choices, on today's SciPy:
- a mean's 95% CI uses Student's t (ratings are few and bounded; n = 1 has no CI);
- a proportion's 95% CI is Wilson's score interval (sane at 0%, 100% and small n);
- two models' ratings: Welch's t-test (unequal variances) and the Mann-Whitney U test;
- two proportions: Fisher's exact test; a win rate against 50%: the exact binomial test
  (`scipy.stats.binomtest`, which replaced the `binom_test` ParlAI's analysis imports).

    mean_ci([3, 4, 2])                  -> Estimate(mean=3.0, low=..., high=..., n=3)
    proportion_ci(7, 10)                -> Estimate(0.7, 0.397, 0.892, 10)
    compare_means(a, b) / compare_proportions(k1, n1, k2, n2) / binomial_test(k, n)
    write_markdown(path, rows, columns) / write_csv(...) / plot_distributions(path, ...)
"""
import csv
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence


@dataclass
class Estimate:
    value: float
    low: Optional[float]
    high: Optional[float]
    n: int

    def format(self, digits=2, percent=False):
        if self.n == 0:
            return "—"
        scale, unit = (100.0, "%") if percent else (1.0, "")
        text = f"{self.value * scale:.{digits}f}{unit}"
        if self.low is None:
            return text
        if percent:  # Wilson's interval is not symmetric
            return f"{text} [{self.low * scale:.{digits}f}-{self.high * scale:.{digits}f}{unit}]"
        half = (self.high - self.low) / 2 * scale
        return f"{text} ± {half:.{digits}f}{unit}"


def mean_ci(values: Sequence[float], confidence=0.95) -> Estimate:
    from scipy import stats

    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Estimate(float("nan"), None, None, 0)
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, None, None, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def proportion_ci(successes: int, n: int, confidence=0.95) -> Estimate:
    """Wilson's score interval."""
    from scipy import stats

    if n == 0:
        return Estimate(float("nan"), None, None, 0)
    p = successes / n
    z = stats.norm.ppf((1 + confidence) / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def compare_means(a: Sequence[float], b: Sequence[float]) -> Dict[str, Optional[float]]:
    """p-values of Welch's t-test and the Mann-Whitney U test (None: too few values)."""
    from scipy import stats

    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return {"welch_p": None, "mannwhitney_p": None}
    if len(set(a)) == 1 and len(set(b)) == 1:  # no variance: t is undefined
        welch = 1.0 if a[0] == b[0] else 0.0
    else:
        welch = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    mw = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return {"welch_p": welch, "mannwhitney_p": mw}


def compare_proportions(k1: int, n1: int, k2: int, n2: int) -> Optional[float]:
    """Fisher's exact test p-value (None without data)."""
    from scipy import stats

    if n1 == 0 or n2 == 0:
        return None
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def binomial_test(successes: int, n: int, p: float = 0.5) -> Optional[float]:
    """Exact two-sided binomial test (ACUTE-Eval's win rates against 50%)."""
    from scipy import stats

    if n == 0:
        return None
    return float(stats.binomtest(successes, n, p).pvalue)


def sample_size_for_difference(difference: float, sd: float, power=0.8, alpha=0.05) -> int:
    """Conversations per model to detect a difference of means with a two-sided t-test
    (normal approximation): n = 2 (z_{1-a/2} + z_power)^2 sd^2 / difference^2."""
    from scipy import stats

    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(2 * (z * sd / difference) ** 2)


def format_p(p: Optional[float]) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------------------------- output
def markdown_table(rows: List[Dict[str, str]], columns: List[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_csv(path, rows: List[Dict], columns: List[str]):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def plot_distributions(path, title: str, scales: Dict[str, range], ratings: Dict[str, Dict[str, List[int]]]):
    """One panel per question: for each model, the share of each rating (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    questions = list(scales)
    models = sorted({m for per_q in ratings.values() for m in per_q})
    fig, axes = plt.subplots(1, len(questions), figsize=(4.2 * len(questions), 3.4), squeeze=False)
    width = 0.8 / max(1, len(models))
    for ax, question in zip(axes[0], questions):
        values = list(scales[question])
        for i, model in enumerate(models):
            given = ratings.get(question, {}).get(model, [])
            shares = [given.count(v) / len(given) if given else 0 for v in values]
            ax.bar([v + (i - (len(models) - 1) / 2) * width for v in values], shares, width, label=f"{model} (n={len(given)})")
        ax.set_title(question)
        ax.set_xticks(values)
        ax.set_ylim(0, 1)
        ax.set_xlabel("rating")
    axes[0][0].set_ylabel("share of conversations")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
