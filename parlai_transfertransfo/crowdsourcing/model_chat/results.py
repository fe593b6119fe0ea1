"""Compile the saved live chats into the ConvAI2 human-evaluation table.

Reads every `conversations.jsonl` the launcher wrote (one line per chat).  Only complete
chats count; incomplete ones (a worker disconnected) are reported but never averaged.
Per model: conversations, each rating's mean ± 95% CI, persona-detection accuracy (Wilson
95% CI), mean words and seconds per model reply and per-turn annotation rates; then each further
model against the first (Welch's t-test on ratings, Fisher's exact test on persona
detection).  Writes results.md, results.csv and ratings.png.
"""
import json
import os
from collections import OrderedDict
from typing import Dict, List

from parlai_transfertransfo.crowdsourcing import stats
from parlai_transfertransfo.errors import TransfertransfoError

CONVERSATIONS = "conversations.jsonl"


def find_files(paths: List[str]) -> List[str]:
    files = []
    for path in paths:
        path = os.path.expanduser(path)
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            found = sorted(
                os.path.join(root, CONVERSATIONS) for root, _, names in os.walk(path) if CONVERSATIONS in names
            )
            if not found:
                raise TransfertransfoError(f"{path}: no {CONVERSATIONS} in this folder")
            files.extend(found)
        else:
            raise TransfertransfoError(f"{path}: no such file or folder")
    return files


def load(paths: List[str]) -> List[dict]:
    records = []
    for path in find_files(paths):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise TransfertransfoError(f"{path}:{lineno}: not a JSON object")
                if not isinstance(record, dict) or "status" not in record or "model" not in record:
                    raise TransfertransfoError(f"{path}:{lineno}: not a conversation record (no status/model)")
                record["_source"] = os.path.basename(os.path.dirname(os.path.abspath(path)))
                records.append(record)
    return records


def _group(records, group_by):
    groups: Dict[str, List[dict]] = OrderedDict()
    for r in records:
        key = r["model"] if group_by == "model" else f"{r['model']} ({r['_source']})"
        groups.setdefault(key, []).append(r)
    return groups


def _bot_replies(record):
    return [turn[0] for turn in record.get("dialog", []) if turn and turn[0].get("id") == "bot"]


def summarize(records: List[dict], group_by="model"):
    """(rows, comparisons, rating keys, scales, ratings by key and model)."""
    complete = [r for r in records if r["status"] == "complete"]
    keys, scales = [], {}
    for r in complete:
        for key, value in (r.get("ratings") or {}).items():
            if key not in keys:
                keys.append(key)
            lo, hi = scales.get(key, (value, value))
            scales[key] = (min(lo, value), max(hi, value))
    buckets = sorted({b for r in complete for t in _bot_replies(r) for b, on in (t.get("annotations") or {}).items()})
    ratings = {key: {} for key in keys}
    rows, per_model = [], OrderedDict()
    for model, group in _group(records, group_by).items():
        done = [r for r in group if r["status"] == "complete"]
        row = {"model": model, "conversations": len(done), "incomplete (not counted)": len(group) - len(done)}
        for key in keys:
            values = [r["ratings"][key] for r in done if key in (r.get("ratings") or {})]
            ratings[key][model] = values
            row[key] = stats.mean_ci(values).format()
            row[f"{key}_mean"] = stats.mean_ci(values).value if values else ""
        correct = sum(1 for r in done if r.get("persona_correct"))
        persona = stats.proportion_ci(correct, len(done))
        row["persona detection"] = persona.format(digits=0, percent=True)
        replies = [t for r in done for t in _bot_replies(r)]
        words = [len(t["text"].split()) for t in replies]
        row["words per reply"] = f"{sum(words) / len(words):.1f}" if words else "—"
        latency = [t["reply_seconds"] for t in replies if "reply_seconds" in t]
        row["seconds per reply"] = f"{sum(latency) / len(latency):.2f}" if latency else "—"
        annotated = [t for t in replies if t.get("annotations")]
        for bucket in buckets:
            hits = sum(1 for t in annotated if t["annotations"].get(bucket))
            row[f"annotated {bucket}"] = f"{hits / len(annotated):.0%}" if annotated else "—"
        rows.append(row)
        per_model[model] = (done, correct)
    comparisons = []
    names = list(per_model)
    for other in names[1:]:
        base_done, base_correct = per_model[names[0]]
        done, correct = per_model[other]
        comparison = {"comparison": f"{other} vs {names[0]}"}
        for key in keys:
            p = stats.compare_means(ratings[key][other], ratings[key][names[0]])
            comparison[f"{key} (Welch p)"] = stats.format_p(p["welch_p"])
        comparison["persona detection (Fisher p)"] = stats.format_p(
            stats.compare_proportions(correct, len(done), base_correct, len(base_done))
        )
        comparisons.append(comparison)
    columns = ["model", "conversations", "incomplete (not counted)", *keys, "persona detection", "words per reply"]
    columns += ["seconds per reply"]
    columns += [f"annotated {b}" for b in buckets]
    return rows, columns, comparisons, {k: range(scales[k][0], scales[k][1] + 1) for k in keys}, ratings


def compile_results(paths: List[str], output_folder: str, group_by="model") -> str:
    records = load(paths)
    if not records:
        raise TransfertransfoError(f"no conversations in {', '.join(paths)}")
    rows, columns, comparisons, scales, ratings = summarize(records, group_by)
    text = "## Live chats: ConvAI2-style human evaluation\n\n" + stats.markdown_table(rows, columns)
    text += "\nmean ± 95% CI (Student's t); persona detection: Wilson 95% CI; only complete chats count.\n"
    if comparisons:
        comparison_columns = list(comparisons[0])
        text += "\n### Significance\n\n" + stats.markdown_table(comparisons, comparison_columns)
    os.makedirs(output_folder, exist_ok=True)
    stats.write_markdown(os.path.join(output_folder, "results.md"), text)
    csv_columns = [c for c in columns] + [f"{k}_mean" for k in scales]
    stats.write_csv(os.path.join(output_folder, "results.csv"), rows, csv_columns)
    if scales:
        # the questions' full scales when known (ConvAI2's engagingness is 1-4)
        known = {"engagingness": range(1, 5), "fluency": range(1, 6), "consistency": range(1, 6)}
        full = {k: known.get(k, v) if set(v) <= set(known.get(k, v)) else v for k, v in scales.items()}
        stats.plot_distributions(os.path.join(output_folder, "ratings.png"), "Ratings of the live chats", full, ratings)
    return text
