"""`parlai convai2_official_eval`: ConvAI2's three official numbers in one command.

- hits@1 and F1: ParlAI's `projects/convai2/eval_hits.py` and `eval_f1.py` are `eval_model`
  on `convai2:self` valid (hits@1 over the 20 candidates, unigram F1 of a generated reply):
  here the same `eval_model` call, once for both;
- the word-level perplexity: official_ppl.py, over the official dictionary
  (data/official_dict.py), through the agent's `next_word_probability`.

It prints the official scripts' `FINAL ...` lines, a one-row Markdown table for README's
ConvAI2 table, and writes a JSON report (`--report-filename`).
"""
import copy
import os

from parlai.utils.misc import round_sigfigs

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.weights.atomic_files import write_json

METRICS = ("all", "ppl", "hits", "f1")
TABLE_HEADER = "| model | data | hits@1 | F1 | perplexity |\n|---|---|---|---|---|"


def _override(opt, **values):
    """`opt` with `values` set, also as command-line overrides: a model file's saved
    options do not win over them."""
    opt = copy.deepcopy(opt)
    opt.setdefault("override", {})
    for key, value in values.items():
        opt[key] = opt["override"][key] = value
    return opt


def check(opt):
    """One line for what cannot run, before any model or data is loaded."""
    metric = opt.get("metric")
    if metric not in METRICS:
        raise TransfertransfoError(f"--metric {metric}: choose {', '.join(METRICS)}")
    if not opt.get("model_file") and not opt.get("model"):
        raise TransfertransfoError("convai2_official_eval needs -mf MODEL (e.g. zoo:transfertransfo/smollm2_135m/model)")
    if metric == "ppl" and (opt.get("batchsize") or 1) > 1:
        raise TransfertransfoError(
            f"--metric ppl runs ConvAI2's official perplexity one example at a time (its world requires batch "
            f"size 1): drop -bs {opt['batchsize']} (a batch size speeds up hits@1 and F1 only)"
        )
    from parlai_transfertransfo.agent import option_checks

    option_checks.validate(opt)


def model_name(opt):
    """The model as the user named it: zoo:NAME for a model under {datapath}/models."""
    mf = opt.get("model_file")
    if not mf:
        return opt.get("model")
    zoo = os.path.abspath(os.path.join(opt.get("datapath") or "", "models"))
    if os.path.abspath(mf).startswith(zoo + os.sep):
        return "zoo:" + os.path.relpath(os.path.abspath(mf), zoo)
    return mf


def hits_and_f1(opt, metric):
    """{'hits@1', 'f1', 'exs'} from eval_model on the task's valid set (F1 needs a
    generated reply; hits@1 alone ranks only)."""
    from parlai.scripts.eval_model import eval_model

    values = {"report_filename": "", "world_logs": ""}
    if metric == "hits":
        values["skip_generation"] = True
    report = eval_model(_override(opt, **values))
    value = lambda key: report[key].value() if hasattr(report.get(key), "value") else report.get(key)  # noqa: E731
    out = {"exs": value("exs")}
    if metric in ("all", "hits"):
        out["hits@1"] = value("hits@1")
    if metric in ("all", "f1"):
        out["f1"] = value("f1")
    return out


def official_dictionary(opt, say):
    """(dictionary, its description) for the task's official perplexity (data/official_dict.py)."""
    from parlai_transfertransfo.data import official_dict

    task = opt["task"]
    dict_task = official_dict.OFFICIAL_TASK if task.split(":")[0] == "convai2" else task
    dictionary, source, read = official_dict.build(opt, dict_task, say)
    words = len(official_dict.offered_words(dictionary))
    say(f"official dictionary: {len(dictionary)} tokens ({words} words offered) from {dict_task} {source} "
        f"({read} examples)")
    official = source == official_dict.TRAIN_AND_VALID and len(dictionary) == official_dict.OFFICIAL_TOKENS
    return dictionary, {"task": dict_task, "source": source, "tokens": len(dictionary), "words": words,
                        "official": official}


def perplexity(opt, dictionary, say):
    """The official word-level perplexity over `dictionary` (official_ppl.py)."""
    from parlai.core.agents import create_agent

    from parlai_transfertransfo.agent import next_word
    from parlai_transfertransfo.agent.transfertransfo import TransfertransfoAgent
    from parlai_transfertransfo.data import official_dict
    from parlai_transfertransfo.tools import official_ppl

    teacher = official_dict.teacher(opt, opt["task"], opt.get("datatype") or "valid")
    agent = create_agent(_override(opt, batchsize=1), requireModelExists=True)
    ours = isinstance(agent, TransfertransfoAgent)
    if ours:
        next_word.use_dictionary(agent, dictionary)
    result = official_ppl.evaluate(agent, teacher, dictionary, opt.get("num_examples", -1), say,
                                   opt.get("log_every_n_secs") or 0)
    scorer = getattr(agent, "_next_words", None)
    result["unencodable_words"] = len(scorer.unencodable) if scorer is not None else 0
    result["mode"] = agent.opt.get("official_ppl") if ours else None
    return result


def table_row(name, opt, scores, ppl, dict_info):
    """The README ConvAI2 table's row for this run."""
    exs = ppl["examples"] if ppl else scores.get("exs")
    data = f"`{opt['task']}` {opt.get('datatype') or 'valid'}, {exs} examples"
    if dict_info and not dict_info["official"]:
        data += f"; dictionary from {dict_info['source']} here ({dict_info['tokens']} tokens, not the official 19,304)"
    hits = f"{scores['hits@1']:.3f}" if scores.get("hits@1") is not None else "—"
    f1 = f"{100 * scores['f1']:.2f} ({scores['f1']:.3f})" if scores.get("f1") is not None else "—"
    perplexity = f"{ppl['ppl']:.2f} (official word ppl, {ppl['mode'] or 'agent'})" if ppl else "—"
    return f"| `{name}` | {data} | {hits} | {f1} | {perplexity} |"


def run(opt, say=print):
    check(opt)
    metric = opt["metric"]
    scores, ppl, dictionary, dict_info = {}, None, None, None
    if metric in ("all", "ppl"):  # first: a missing dictionary source stops before anything runs
        dictionary, dict_info = official_dictionary(opt, say)
    if metric in ("all", "hits", "f1"):
        scores = hits_and_f1(opt, metric)
    if metric in ("all", "ppl"):
        ppl = perplexity(opt, dictionary, say)
        if ppl["unencodable_words"]:
            say(f"{ppl['unencodable_words']} dictionary word(s) the model's tokenizer cannot encode got the "
                "smallest positive probability")
    name = model_name(opt)
    row = table_row(name, opt, scores, ppl, dict_info)
    say("============================")
    if "hits@1" in scores:
        say(f"FINAL Hits@1: {scores['hits@1']}")
    if "f1" in scores:
        say(f"FINAL F1: {scores['f1']}")
    if ppl:
        say(f"FINAL PPL: {round_sigfigs(ppl['ppl'], 4)}")
        say(f"({ppl['scored_words']} words scored, {ppl['unknown_words']} not in the dictionary, "
            f"{ppl['examples']} examples in {ppl['seconds']:.0f} s: {ppl['examples_per_s']:.3g} examples/s)")
    say(TABLE_HEADER + "\n" + row)
    report = {"model": name, "task": opt["task"], "datatype": opt.get("datatype"), "metric": metric,
              "hits@1": scores.get("hits@1"), "f1": scores.get("f1"), "eval_model_examples": scores.get("exs"),
              "ppl": ppl, "dictionary": dict_info, "table_row": row}
    path = opt.get("report_filename")
    if path:
        if path.startswith("."):
            path = opt["model_file"] + path
        write_json(path, report, indent=2)
        say(f"wrote {path}")
    return report
