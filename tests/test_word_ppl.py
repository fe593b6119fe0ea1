"""`wppl`: the gold reply's NLL (its tokens and `<eos>`) per word of the lowercased reply as
ConvAI2 split it, pooled over a dataset as total NLL over total words.

By hand: the first two examples of the real ConvAI2 validation dialogs, scored by a tiny
random Llama through the recipe's own whole-sequence layout (`segments.build_instance` +
`DoubleHeads.forward`), against what `parlai eval_model` reports.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import run_parlai
from parlai_transfertransfo.agent.word_ppl import count_words, reply_metrics, WordPPLMetric
from benchmarks.kill_resume import first_dialogs

PERSONA = ["i read twenty books a year.", "i'm a stunt double as my second job.", "i only eat kosher.",
           "i was raised in a single parent household."]
# (history, gold reply, its words counted by hand: ConvAI2's text is already split)
EXAMPLES = [
    (["hello what are doing today ?"],
     "i am good , i just got off work and tired , i have two jobs .",
     ["i", "am", "good", ",", "i", "just", "got", "off", "work", "and", "tired", ",", "i", "have", "two", "jobs", "."]),
    (["hello what are doing today ?", "i am good , i just got off work and tired , i have two jobs .",
      "i just got done watching a horror movie"],
     "i rather read , i've read about 20 books this year .",
     ["i", "rather", "read", ",", "i've", "read", "about", "20", "books", "this", "year", "."]),
]


def test_words_are_counted_as_convai2_split_them():
    assert count_words("Hi, I'm fine.How are   you?") == 9  # hi , i'm fine . how are you ?
    assert count_words(EXAMPLES[0][1]) == len(EXAMPLES[0][2])
    assert count_words("") == count_words("   ") == 0


def test_wppl_pools_total_nll_over_total_words_not_a_mean():
    a, b = WordPPLMetric(1.0, 1), WordPPLMetric(9.0, 3)
    assert (a + b).value() == pytest.approx(math.exp(10 / 4))
    assert (a + b).value() != pytest.approx((a.value() + b.value()) / 2)
    assert isinstance(a + b, WordPPLMetric) and (a + None) is a


def test_a_reply_of_no_words_adds_its_nll_and_no_words_without_dividing_by_zero():
    nll = torch.tensor([[0.5, 0.0], [1.0, 2.0]])
    empty, full = reply_metrics(nll, ["", "hi there ."])
    assert (empty._numer, empty._denom) == (0.5, 0)
    assert math.isnan(empty.value())  # alone: no words, no per-word value
    assert (empty + full).value() == pytest.approx(math.exp(3.5 / 3))
    rotated = reply_metrics(nll, ["hi there ."], rows_per_reply=2)  # persona rotations of one example
    assert [m._denom for m in rotated] == [3, 3]


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory, tiny_llama_dir):
    """A transfertransfo model file over the tiny Llama (no training), and its DoubleHeads."""
    from parlai_transfertransfo.weights.model_files import write_model_file as _write_model_file
    from test_export import agent_double_heads

    out = tmp_path_factory.mktemp("wppl")
    _write_model_file(tiny_llama_dir, str(out / "model"), str(out / "data"), model_name=tiny_llama_dir)
    double_heads, dictionary = agent_double_heads(str(out / "model"))
    return str(out / "model"), double_heads, dictionary, out


def nll_by_hand(double_heads, dictionary, history, reply):
    """Summed NLL of the reply's tokens and `<eos>`, from the recipe's whole sequence."""
    from parlai_transfertransfo.recipe import segments

    instance = segments.build_instance([dictionary.txt2vec(p) for p in PERSONA],
                                     [dictionary.txt2vec(h) for h in history],
                                     dictionary.txt2vec(reply), dictionary.special)
    ids, types = torch.tensor([instance["input_ids"]]), torch.tensor([instance["token_type_ids"]])
    labels = torch.tensor(instance["lm_labels"])
    with torch.no_grad():
        logits, _ = double_heads(ids, types)
    nll = F.cross_entropy(logits[0, :-1], labels[1:], ignore_index=-100, reduction="sum")
    return nll.item(), int((labels != -100).sum())


def eval_report(model_file, out, n):
    dialogs = first_dialogs(1, out / "one.txt")
    rc, output = run_parlai("eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", dialogs,
                            "--valid-split", 0, "--datapath", out / "data", "--skip-generation", "true",
                            "-bs", 1, "--num-examples", n, "--report-filename", out / f"report{n}.json")
    assert rc == 0, output[-3000:]
    with open(out / f"report{n}.json") as f:
        return json.load(f)["report"]


def test_wppl_by_hand_on_real_convai2_examples_matches_eval_model(tiny_model_file):
    model_file, double_heads, dictionary, out = tiny_model_file
    by_hand = [nll_by_hand(double_heads, dictionary, h, r) + (len(words),) for h, r, words in EXAMPLES]
    (nll1, tokens1, words1), (nll2, tokens2, words2) = by_hand

    one = eval_report(model_file, out, 1)
    assert one["exs"] == 1
    assert one["wppl"] == pytest.approx(math.exp(nll1 / words1), rel=1e-5)
    assert one["ppl"] == pytest.approx(math.exp(nll1 / tokens1), rel=1e-5)  # the same NLL per BPE token

    two = eval_report(model_file, out, 2)
    assert two["exs"] == 2
    pooled = math.exp((nll1 + nll2) / (words1 + words2))
    assert two["wppl"] == pytest.approx(pooled, rel=1e-5)
    mean = (math.exp(nll1 / words1) + math.exp(nll2 / words2)) / 2
    assert abs(two["wppl"] - mean) > 1e-3 * pooled  # not a mean of per-example values


def test_an_empty_gold_reply_counts_in_exs_and_adds_no_words(tiny_model_file):
    model_file, double_heads, dictionary, out = tiny_model_file
    history, reply, words = EXAMPLES[0]
    persona = "\\n".join(f"your persona: {p}" for p in PERSONA)
    with open(out / "empty.txt", "w") as f:
        for label in ("", reply):
            f.write(f"text:{persona}\\n{history[0]}\tlabels:{label}\tlabel_candidates:{label}|i like tea .\tepisode_done:True\n")
    rc, output = run_parlai("eval_model", "-mf", model_file, "-t", "fromfile:parlaiformat", "--fromfile-datapath",
                            out / "empty.txt", "--datapath", out / "data", "--skip-generation", "true", "-bs", 2,
                            "--report-filename", out / "empty.json")
    assert rc == 0 and "Traceback" not in output, output[-3000:]
    with open(out / "empty.json") as f:
        report = json.load(f)["report"]
    nll_empty, _ = nll_by_hand(double_heads, dictionary, history, "")
    nll_full, _ = nll_by_hand(double_heads, dictionary, history, reply)
    assert report["exs"] == 2
    assert report["wppl"] == pytest.approx(math.exp((nll_empty + nll_full) / len(words)), rel=1e-5)
