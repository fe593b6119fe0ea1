"""One command for every benchmark: prints a table of medians and ratios, and the machine.

    .venv/bin/python -m benchmarks [--model gpt2-small|smollm2-135m|all] [--reps 3]
        [--only P1,P2,P3,P5,P6] [--device cpu|cuda] [--threads 1] [--interactive-model-file MF]

Each pair runs side by side in this one process, interleaved, after a check that both
sides compute the same thing (same greedy tokens; ranking scores and losses to 1e-4).
"""
import argparse
import os
import sys
import tempfile

import torch

from benchmarks import common

GOALS = {  # (numerator side, denominator side, goal text, test on the ratio)
    "P1": [("no-cache loop (interact.py)", "agent observe+act", ">= 6x faster", lambda r: r >= 6),
           ("agent observe+act", "raw cached loop (transformers)", "<= 1.15x raw", lambda r: r <= 1.15)],
    "P2": [("full-sequence scoring (convai_evaluation.py)", "agent eval_step: ppl + hits@1", ">= 10x faster", lambda r: r >= 10),
           ("full-sequence scoring (convai_evaluation.py)", "agent eval_step: hits@1 only", ">= 10x faster", lambda r: r >= 10)],
    "P3": [("agent train_step", "plain PyTorch loop (train.py)", ">= 0.9x plain tok/s", lambda r: r >= 0.9)],
    "P5": [],
    "P6": [("8 chats, -bs 1", "8 chats, -bs 8", "", None),  # the batching gain, no goal
           ("8 chats, -bs 8", "1 chat, -bs 1", "<= 3x one chat", lambda r: r <= 3)],
}


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2-small", choices=[*common.MODELS, "all"])
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per side (median reported)")
    p.add_argument("--only", default="P1,P2,P3,P5,P6", help="comma-separated subset of P1,P2,P3,P5,P6")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads: 1 is steadiest when other work shares the cores")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "transfertransfo-bench"),
                   help="random gpt2-small and converted SmolLM2 weights are kept here")
    p.add_argument("--train-batch-size", type=int, default=None, help="P3 batch (default 4 on CPU, 32 on GPU)")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 peak, if not recognised")
    p.add_argument("--interactive-model-file", default="zoo:transfertransfo/smollm2_135m/model",
                   help="P5: model file or zoo path for `parlai interactive -mf` (default: the "
                   "embedded default model, built once by an untimed first run)")
    p.add_argument("--self-chat-model-file", default="zoo:transfertransfo/smollm2_135m/model",
                   help="P6: model file or zoo path for 8 self-chats at -bs 1 and -bs 8")
    return p.parse_args(argv)


def rows_for(bench, model, result, device):
    """Table rows: one per side, then one per goal ratio."""
    rows, times = [], result["times"]
    per_s = result.get("tokens_per_s")
    for side, ts in times.items():
        value = f"{common.median(ts):.3f} s" + (f" ({per_s[side]:.0f} tok/s)" if per_s else "")
        if "mfu" in result and result["mfu"].get(side) is not None:
            value += f", MFU {100 * result['mfu'][side]:.1f}%"
        rows.append((bench, model, side, value, f"{min(ts):.3f}-{max(ts):.3f}", ""))
    for num, den, goal, ok in GOALS[bench]:
        if bench == "P3":  # throughput: ours over theirs
            ratio = per_s[num] / per_s[den]
        else:
            ratio = common.median(times[num]) / common.median(times[den])
        verdict = "" if ok is None else "ok" if ok(ratio) else "MISSED"
        rows.append((bench, model, f"ratio {num} / {den}", f"{ratio:.2f}x", goal, verdict))
    if bench == "P5":
        ok = common.median(times["parlai interactive: first reply"]) <= 15
        rows.append((bench, model, "goal", "", "<= 15 s", "ok" if ok else "MISSED"))
    return rows


def main(argv=None):
    args = parse(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    only = {b.strip().upper() for b in args.only.split(",")}
    models = common.MODELS if args.model == "all" else (args.model,)
    dialogs = common.convai2_dialogs()
    batch = args.train_batch_size or (32 if args.device == "cuda" else 4)
    rows, notes = [], []

    def report(bench, model, result):
        new = rows_for(bench, model, result, args.device)
        rows.extend(new)
        for r in new:  # as we go: a long run shows progress
            print(" | ".join(r), flush=True)

    for model in models:
        if "P1" in only:
            from benchmarks import decoding
            r = decoding.run(model, args.workdir, args.device, args.reps, dialogs)
            notes.append(f"P1 {model}: {r['context_tokens']}-token context, greedy, 20 tokens; same tokens on all sides")
            report("P1", model, r)
        if "P2" in only:
            from benchmarks import ranking
            r = ranking.run(model, args.workdir, args.device, args.reps, dialogs)
            notes.append(f"P2 {model}: {r['context_tokens']}-token context, {r['candidates']} candidates, "
                         f"max |score difference| {r['max_score_diff']:.1e}")
            report("P2", model, r)
        if "P3" in only:
            from benchmarks import training
            for dtype in (["fp32", "bf16"] if args.device == "cpu" else ["bf16", "fp16"]):
                r = training.run(model, args.workdir, args.device, args.reps, dialogs, batch, dtype, args.peak_tflops)
                notes.append(f"P3 {model} {dtype}: batch {batch} x 2 candidates, "
                             f"{r['tokens_per_step'][1]} tokens in the first timed step, {r['params'] / 1e6:.0f}M parameters")
                report("P3", f"{model} {dtype}", r)
    if "P5" in only:
        from benchmarks import interactive
        r = interactive.run(args.interactive_model_file, args.device, args.reps)
        notes.append(f"P5 {args.interactive_model_file}: first reply {r['reply']!r} "
                     f"(set-up run, untimed: {r['setup_seconds']:.1f} s)")
        report("P5", args.interactive_model_file.replace("zoo:transfertransfo/", "").replace("/model", ""), r)

    if "P6" in only:
        from benchmarks import self_chat
        r = self_chat.run(args.self_chat_model_file, args.device, args.reps)
        notes.append(f"P6 {args.self_chat_model_file}: 8 chats of 4 turns (personas, then 3 exchanges), "
                     f"greedy, the same persona pairs on every side; {r['same_utterances']} of "
                     f"{r['utterances']} utterances at -bs 8 equal those at -bs 1; "
                     + ("times are CPU seconds of this process; wall medians: "
                        + ", ".join(f"{k} {common.median(v):.1f} s" for k, v in r["wall"].items())
                        if args.device == "cpu" else "wall times"))
        report("P6", args.self_chat_model_file.replace("zoo:transfertransfo/", "").replace("/model", ""), r)

    print()
    print(f"Machine: {common.machine(args.device)}; {args.reps} reps, sides interleaved")
    print("| bench | model | side | median | min-max / goal | |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
