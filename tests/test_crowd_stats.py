"""The statistics and the results table of human evaluations (shared with ACUTE-Eval)."""
import json

import pytest

from parlai_transfertransfo.crowdsourcing import stats
from parlai_transfertransfo.crowdsourcing.model_chat.results import compile_results, load, summarize
from parlai_transfertransfo.errors import TransfertransfoError


def test_mean_ci_uses_students_t():
    e = stats.mean_ci([1, 2, 3, 4, 5])
    # sd = 1.5811, t(0.975, 4) = 2.7764: half-width 1.9632
    assert e.value == 3 and e.n == 5
    assert e.high - e.value == pytest.approx(1.9632, abs=1e-4)
    assert e.format() == "3.00 ± 1.96"
    assert stats.mean_ci([4]).format() == "4.00"  # no CI from one value
    assert stats.mean_ci([]).format() == "—"


def test_proportion_ci_is_wilsons_interval():
    e = stats.proportion_ci(7, 10)
    assert (e.low, e.high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))
    zero = stats.proportion_ci(0, 5)
    assert zero.low == 0 and zero.high == pytest.approx(0.4345, abs=1e-4)
    assert zero.format(digits=0, percent=True) == "0% [0-43%]"


def test_significance_tests_on_todays_scipy():
    assert stats.binomial_test(9, 10) == pytest.approx(0.021484375)
    assert stats.binomial_test(5, 10) == pytest.approx(1.0)
    assert stats.compare_proportions(8, 10, 2, 10) == pytest.approx(0.0230, abs=1e-4)
    p = stats.compare_means([4, 4, 3, 4, 3, 4], [1, 2, 1, 2, 2, 1])
    assert p["welch_p"] < 0.001 and p["mannwhitney_p"] < 0.01
    assert stats.compare_means([3], [4]) == {"welch_p": None, "mannwhitney_p": None}
    assert stats.format_p(0.0004) == "<0.001" and stats.format_p(0.0312) == "0.031"


def test_sample_size_for_a_useful_confidence_interval():
    # half a point of engagingness with sd 1 (ConvAI2's ratings): 63 conversations per model
    assert stats.sample_size_for_difference(0.5, 1.0) == 63
    assert stats.sample_size_for_difference(1.0, 1.0) == 16


def record(model, ratings, correct, status="complete", annotations=None):
    bot = {"id": "bot", "text": "one two three four"}
    if annotations is not None:
        bot["annotations"] = annotations
    return {
        "status": status, "model": model, "ratings": ratings if status == "complete" else None,
        "persona_correct": correct, "dialog": [[{"id": "human", "text": "hi there you"}], [bot]],
    }


def write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_two_models_side_by_side_with_a_significance_test(tmp_path):
    a = [record("good", {"engagingness": 4, "fluency": 5, "consistency": 5}, True, annotations={"none": True})
         for _ in range(6)]
    b = [record("bad", {"engagingness": 1, "fluency": 2, "consistency": v}, False, annotations={"none": False, "repetitive": True})
         for v in (1, 2, 1, 2, 1, 2)]
    write(tmp_path / "run1" / "conversations.jsonl", a + [record("good", None, None, status="incomplete")])
    write(tmp_path / "run2" / "conversations.jsonl", b)
    text = compile_results([str(tmp_path / "run1"), str(tmp_path / "run2")], str(tmp_path / "out"))
    rows, columns, comparisons, scales, ratings = summarize(load([str(tmp_path)]))
    good, bad = rows
    assert (good["model"], good["conversations"], good["incomplete (not counted)"]) == ("good", 6, 1)
    assert good["engagingness"] == "4.00 ± 0.00" and bad["consistency"] == "1.50 ± 0.57"
    assert good["persona detection"] == "100% [61-100%]" and bad["persona detection"] == "0% [0-39%]"
    assert good["words per reply"] == "4.0"
    assert good["annotated none"] == "100%" and bad["annotated repetitive"] == "100%"
    assert comparisons == [{
        "comparison": "bad vs good", "engagingness (Welch p)": "<0.001", "fluency (Welch p)": "<0.001",
        "consistency (Welch p)": "<0.001", "persona detection (Fisher p)": "0.002",
    }]
    assert "| good | 6 | 1 | 4.00 ± 0.00 |" in text
    for name in ("results.md", "results.csv", "ratings.png"):
        assert (tmp_path / "out" / name).stat().st_size > 100
    assert (tmp_path / "out" / "ratings.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_of_one_model_can_be_kept_apart(tmp_path):
    write(tmp_path / "monday" / "conversations.jsonl", [record("m", {"engagingness": 2}, True)])
    write(tmp_path / "tuesday" / "conversations.jsonl", [record("m", {"engagingness": 4}, True)])
    rows = summarize(load([str(tmp_path)]), group_by="folder")[0]
    assert [(r["model"], r["engagingness"]) for r in rows] == [("m (monday)", "2.00"), ("m (tuesday)", "4.00")]


def test_a_malformed_results_file_fails_in_one_line_naming_the_line(tmp_path):
    (tmp_path / "conversations.jsonl").write_text(json.dumps(record("m", {"engagingness": 2}, True)) + "\n{oops\n")
    with pytest.raises(TransfertransfoError, match=r"conversations.jsonl:2: not a JSON object"):
        load([str(tmp_path)])
    with pytest.raises(TransfertransfoError, match="no such file or folder"):
        load([str(tmp_path / "nope")])
