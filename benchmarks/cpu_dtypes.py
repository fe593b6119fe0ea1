"""What each `--cpu-dtype` costs in quality: hits@1, F1 and ppl on the 100 dev dialogs, and
how many greedy replies and top-ranked candidates equal fp32's on the same contexts.

A mode may be the default only if hits@1 and F1 each drop by at most 0.5 points against fp32
(issue 27). Each mode's run is `tools/dev_outputs.py dump` (the `convai2_file` teacher,
`--valid-split 100 -dt valid`, greedy replies), kept in the workdir, so an interrupted run
resumes with the modes it lacks.

    .venv/bin/python -m benchmarks.cpu_dtypes [-mf zoo:transfertransfo/smollm2_135m/model] [-n 777]
"""
import argparse
import json
import os
import sys
import tempfile

from parlai_transfertransfo.tools import dev_outputs

MODES = ("fp32", "bf16", "int8")


def _dump(model_file, datapath, workdir, mode, num_examples, batchsize):
    path = os.path.join(workdir, f"dev_outputs_{mode}_{num_examples}.json")
    if not os.path.isfile(path):
        result = dev_outputs.dump(model_file, datapath, num_examples=num_examples, batchsize=batchsize,
                                  extra=["--cpu-dtype", mode])
        with open(path + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return json.load(f)


def run(model_file, datapath, workdir, modes=MODES, num_examples=-1, batchsize=16):
    """{mode: {hits@1, f1, ppl, same_replies, same_top, examples, max_score_diff}}, fp32 first."""
    os.makedirs(workdir, exist_ok=True)
    dumps = {mode: _dump(model_file, datapath, workdir, mode, num_examples, batchsize)
             for mode in ("fp32", *[m for m in modes if m != "fp32"])}
    rows = {}
    for mode, d in dumps.items():
        same = dev_outputs.compare(dumps["fp32"], d)
        n = same["examples"]
        rows[mode] = {
            "hits@1": d["report"]["hits@1"], "f1": d["report"]["f1"], "ppl": d["report"]["ppl"],
            "examples": n, "same_replies": n - len(same["different_replies"]),
            "same_top": same["same_top_candidate"], "max_score_diff": same["max_abs_score_diff"],
        }
    return rows


def table(rows):
    """Markdown rows: each mode against fp32, and whether it may be the default."""
    base = rows["fp32"]
    out = ["| --cpu-dtype | hits@1 | F1 | ppl | greedy replies equal to fp32's | top candidate equal | "
           "max score diff | may be the default |", "|---|---|---|---|---|---|---|---|"]
    for mode, r in rows.items():
        d_hits, d_f1 = 100 * (r["hits@1"] - base["hits@1"]), 100 * (r["f1"] - base["f1"])
        ok = "yes" if d_hits >= -0.5 and d_f1 >= -0.5 else "no"
        out.append(f"| {mode} | {r['hits@1']:.4f} ({d_hits:+.2f} pt) | {r['f1']:.4f} ({d_f1:+.2f} pt) | "
                   f"{r['ppl']:.3f} | {r['same_replies']}/{r['examples']} | {r['same_top']}/{r['examples']} | "
                   f"{r['max_score_diff']:.2e} | {ok} |")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_dtypes", description=__doc__.splitlines()[0])
    p.add_argument("-mf", "--model-file", default="zoo:transfertransfo/smollm2_135m/model")
    p.add_argument("--datapath", default=os.path.join(tempfile.gettempdir(), "transfertransfo-bench", "data"))
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "transfertransfo-bench", "cpu_dtypes"))
    p.add_argument("-n", "--num-examples", type=int, default=-1, help="-1: all 777 examples of the 100 dialogs")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch
    from parlai.core.build_data import modelzoo_path

    torch.set_num_threads(args.threads)
    model_file = modelzoo_path(args.datapath, args.model_file)
    rows = run(model_file, args.datapath, args.workdir, num_examples=args.num_examples)
    print("\n".join(table(rows)))
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
