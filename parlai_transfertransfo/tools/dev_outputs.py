"""What a model file computes on the dev dialogs, example by example, and whether two agree.

    python -m parlai_transfertransfo.tools.dev_outputs dump -mf MODEL --out A.json
    python -m parlai_transfertransfo.tools.dev_outputs compare A.json B.json

`dump` runs `eval_model`'s loop (the `convai2_file` teacher, `--valid-split 100 -dt valid`,
greedy replies) and records, per example, every label candidate's ranking score, the gold
reply's summed token NLL and the greedy reply, plus the final report. `compare` gives the
largest score and NLL differences and the replies that differ: how the zoo artifact
converted to a PEFT adapter is checked against the hand-written-LoRA one it replaced.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIALOGS = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")


def dump(model_file, datapath, dialogs=DIALOGS, num_examples=-1, batchsize=8, generate=True, extra=()):
    """{"examples": [...], "report": {...}} of `model_file` on the dev examples; `extra`: more
    eval_model arguments (e.g. `--cpu-dtype int8`)."""
    from parlai.core.agents import create_agent
    from parlai.core.metrics import Metric
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    opt = ParlaiParser(True, True).parse_args([
        "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", "100", "-dt", "valid",
        "-mf", model_file, "--datapath", datapath, "-bs", str(batchsize), "--no-cuda",
        "--inference", "greedy", "--skip-generation", "false" if generate else "true", *map(str, extra),
    ])
    world = create_task(opt, create_agent(opt, requireModelExists=True))
    scored = []  # per batch: the candidates' scores of each valid example
    agent = world.world.get_agents()[1]  # the one whose batch_act the batch world calls
    agent.rank_eval_label_candidates = _recording(agent.rank_eval_label_candidates, scored)
    examples, total = [], world.num_examples() if num_examples < 0 else num_examples
    while not world.epoch_done() and len(examples) < total:
        world.parley()
        by_row = scored.pop() if scored else {}
        for row, sub in enumerate(world.worlds):
            teacher_act, reply = sub.acts
            if not teacher_act or "eval_labels" not in teacher_act or reply is None:
                continue
            metrics = reply.get("metrics", {})
            examples.append({
                "gold": teacher_act["eval_labels"][0],
                "candidates": list(teacher_act["label_candidates"]),
                "scores": [by_row.get(row, {}).get(c) for c in teacher_act["label_candidates"]],
                "gold_nll": metrics["loss"]._numer if "loss" in metrics else None,
                "gold_tokens": metrics["loss"]._denom if "loss" in metrics else None,
                "reply": reply.get("text"),
            })
    report = {k: (v.value() if isinstance(v, Metric) else v) for k, v in world.report().items()}
    return {"model_file": model_file, "examples": examples[:total], "report": report}


def _recording(rank, scored):
    def recording_rank(batch, batchsize):
        choices, scores = rank(batch, batchsize)
        scored.append({int(i): dict(zip(c, s.tolist())) for i, c, s in zip(batch.valid_indices, choices, scores)})
        return choices, scores

    return recording_rank


def compare(a, b):
    """Largest differences between two dumps of the same examples."""
    if len(a["examples"]) != len(b["examples"]):
        raise SystemExit(f"different numbers of examples: {len(a['examples'])} and {len(b['examples'])}")
    score_diff = nll_diff = 0.0
    replies, top1 = [], 0
    for i, (x, y) in enumerate(zip(a["examples"], b["examples"])):
        if x["gold"] != y["gold"] or x["candidates"] != y["candidates"]:
            raise SystemExit(f"example {i} differs between the dumps: not the same data")
        score_diff = max([score_diff] + [abs(s - t) for s, t in zip(x["scores"], y["scores"])])
        nll_diff = max(nll_diff, abs(x["gold_nll"] - y["gold_nll"]))
        top1 += max(range(len(x["scores"])), key=x["scores"].__getitem__) == max(
            range(len(y["scores"])), key=y["scores"].__getitem__)
        if x["reply"] != y["reply"]:
            replies.append({"example": i, "a": x["reply"], "b": y["reply"]})
    return {
        "examples": len(a["examples"]),
        "candidates": sum(len(x["scores"]) for x in a["examples"]),
        "max_abs_score_diff": score_diff,
        "max_abs_gold_nll_diff": nll_diff,
        "same_top_candidate": top1,
        "different_replies": replies,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("-mf", "--model-file", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--datapath", default="data")
    d.add_argument("--dialogs", default=DIALOGS)
    d.add_argument("-n", "--num-examples", type=int, default=-1)
    d.add_argument("-bs", "--batchsize", type=int, default=8)
    d.add_argument("--skip-generation", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args(argv)
    if args.command == "dump":
        from parlai.core.build_data import modelzoo_path

        model_file = modelzoo_path(args.datapath, args.model_file)
        result = dump(model_file, args.datapath, args.dialogs, args.num_examples, args.batchsize,
                      generate=not args.skip_generation)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result["report"], sort_keys=True))
    else:
        with open(args.a) as f, open(args.b) as g:
            print(json.dumps(compare(json.load(f), json.load(g)), indent=1))


if __name__ == "__main__":
    sys.exit(main())
