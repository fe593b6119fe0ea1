"""One command for every benchmark: prints a table of medians and ratios, and the machine.

    .venv/bin/python -m benchmarks [--model gpt2-small|smollm2-135m|all] [--reps 3]
        [--only P1,P2,P3,P5,P6,P6b,P7,P8,P9] [--device cpu|cuda] [--threads 1] [--interactive-model-file MF]
        [--p2-examples 16] [--eval-model-file MF] [--p7-examples 512] [--p7-skip-generation]
        [--self-chat-model-file MF] [--p9-profile] [--cpu-dtypes fp32,bf16,int8] [--peer]

On a CPU the machine's limits come first (benchmarks/roofline.py), and P1, P3, P6 and P7
each get a row against the floor that bounds them.

Each pair runs side by side in this one process, interleaved, after a check that both
sides compute the same thing (same greedy tokens; ranking scores and losses to 1e-4).
"""
import argparse
import os
import sys
import tempfile

import torch

from benchmarks import common
from parlai_transfertransfo.serving.off_main_thread import call as alone  # each bench on a thread that ends

GOALS = {  # (numerator side, denominator side, goal text, test on the ratio)
    "P1": [("no-cache loop (interact.py)", "agent observe+act", ">= 6x faster", lambda r: r >= 6),
           ("agent observe+act", "raw cached loop (transformers)", "<= 1.15x raw", lambda r: r <= 1.15),
           ("agent observe+act, one-row matmuls unsplit (before row blocks)", "agent observe+act",
            "(row blocks' gain)", None)],
    "P2 one context": [("full-sequence scoring (convai_evaluation.py)", "agent eval_step: ppl + hits@1", ">= 10x faster", lambda r: r >= 10),
           ("full-sequence scoring (convai_evaluation.py)", "agent eval_step: hits@1 only", ">= 10x faster", lambda r: r >= 10)],
    "P3": [("agent train_step", "plain PyTorch loop (train.py)", ">= 0.9x plain tok/s", lambda r: r >= 0.9),
           ("agent train_step", "agent train_step, previous cached path", "(before)", None)],
    "P5": [],
    "P6": [("16 sessions at once (dynamic batching)", "the same requests one at a time", ">= 12x throughput",
            lambda r: r >= 12),
           ("16 sessions at once (dynamic batching)", "the same requests one at a time, whole contexts (no persona cache)",
            ">= 4x throughput", lambda r: r >= 4),
           ("16 sessions at once (dynamic batching)", "16 sessions at once (dynamic batching), whole contexts (no persona cache)",
            "(persona cache gain)", None),
           ("the same requests one at a time", "the same requests one at a time, whole contexts (no persona cache)",
            "(persona cache gain)", None)],
    "P6-peer": [],  # its goals compare with our P6 (peer_server.goal_rows)
    "P6b": [("16 sessions at once (dynamic batching), one poisoned request among them",
             "16 sessions at once (dynamic batching)", ">= 0.95x (isolation's cost)", lambda r: r >= 0.95)],
    "P7": [],
    "P8": [("8 chats, -bs 1", "8 chats, -bs 8", "", None),  # the batching gain, no goal
           ("8 chats, -bs 8", "1 chat, -bs 1", "<= 3x one chat", lambda r: r <= 3),
           ("8 chats, -bs 8", "1 chat, -bs 1, whole contexts (no persona cache)", "<= 3x one chat", lambda r: r <= 3),
           ("8 chats, -bs 8, whole contexts (no persona cache)", "8 chats, -bs 8", "(persona cache gain)", None),
           ("1 chat, -bs 1, whole contexts (no persona cache)", "1 chat, -bs 1", "(persona cache gain)", None)],
}


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2-small", choices=[*common.MODELS, "all"])
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per side (median reported)")
    p.add_argument("--only", default="P1,P2,P3,P5,P6,P6b,P7,P8,P9",
                   help="comma-separated subset of P1,P2,P3,P5,P6,P6b,P7,P8,P9")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads: 1 is steadiest when other work shares the cores")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "transfertransfo-bench"),
                   help="random gpt2-small and converted SmolLM2 weights are kept here")
    p.add_argument("--p2-examples", type=int, default=16, help="P2: real examples ranked per repetition")
    p.add_argument("--train-batch-size", type=int, default=None, help="P3 batch (default 4 on CPU, 32 on GPU)")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 peak, if not recognised")
    p.add_argument("--interactive-model-file", default="zoo:transfertransfo/smollm2_135m/model",
                   help="P5: model file or zoo path for `parlai interactive -mf` (default: the "
                   "embedded default model, built once by an untimed first run)")
    p.add_argument("--eval-model-file", default="zoo:transfertransfo/smollm2_135m/model",
                   help="P7: the model whose full evaluation is timed (default: the embedded model)")
    p.add_argument("--p7-examples", type=int, default=512, help="P7: real examples per side")
    p.add_argument("--p7-skip-generation", action="store_true",
                   help="P7: rank and ppl only (eval_model's default also generates a reply)")
    p.add_argument("--p6-messages", default="opening,third",
                   help="P6 and P6b: which session messages to time (opening, third)")
    p.add_argument("--self-chat-model-file", default="zoo:transfertransfo/smollm2_135m/model",
                   help="P8: model file or zoo path for 8 self-chats at -bs 1 and -bs 8")
    p.add_argument("--p9-profile", action="store_true", help="P9: print the host side's top functions")
    p.add_argument("--cpu-dtypes", default="fp32,bf16,int8",
                   help="P1 on a CPU: the agent's --cpu-dtype sides (fp32 always)")
    p.add_argument("--peer", action="store_true",
                   help="P1 and P6: add llama.cpp on the same GGUF (smollm2-135m; ./install.sh peer)")
    p.add_argument("--roofline", default="full", choices=["full", "quick"],
                   help="the machine's limits, measured first (quick: tiny sizes, for the tests)")
    return p.parse_args(argv)


FULL = "full-sequence scoring (convai_evaluation.py)"


def real_p2_goals(limit):
    """P2 on real examples: each batch size within 90% of the token-count limit, -bs 16 no
    slower per example than -bs 1; the previous path's ratios for comparison."""
    def of_limit(r):
        return f"{r / limit:.0%} of the {limit:.2f}x limit"

    goals = []
    for bs in (1, 16):
        goals.append((FULL, f"agent eval_step -bs {bs}: ppl + hits@1", f">= 90% of the {limit:.2f}x limit",
                      lambda r: r >= 0.9 * limit, of_limit))
        goals.append((FULL, f"previous cached path -bs {bs}", "(before)", None, of_limit))
    goals.append(("agent eval_step -bs 1: ppl + hits@1", "agent eval_step -bs 16: ppl + hits@1",
                  ">= 1.0 (-bs 16 no slower per example)", lambda r: r >= 1.0, None))
    goals.append(("previous cached path -bs 1", "previous cached path -bs 16", "(before)", None, None))
    return goals


def rows_for(bench, model, result, device):
    """Table rows: one per side, then one per goal ratio."""
    rows, times = [], result["times"]
    per_s = result.get("tokens_per_s")
    for side, ts in times.items():
        value = f"{common.median(ts):.3f} s" + (f" ({per_s[side]:.0f} tok/s)" if per_s else "")
        if "latency" in result:
            value += ", latency p50 {:.2f} s / p95 {:.2f} s".format(*result["latency"][side])
        if "mfu" in result and result["mfu"].get(side) is not None:
            value += f", MFU {100 * result['mfu'][side]:.1f}%"
        rows.append((bench, model, side, value, f"{min(ts):.3f}-{max(ts):.3f}", ""))
    goals = result.get("goals") or [g + (None,) for g in GOALS[bench]]
    for num, den, goal, ok, note in goals:
        if num not in times or den not in times:  # a side this model or machine has not
            continue
        if bench in ("P3", "P6", "P6b"):  # throughput: ours over theirs
            ratio = per_s[num] / per_s[den]
        else:
            ratio = common.median(times[num]) / common.median(times[den])
        value = f"{ratio:.2f}x" + (f" ({note(ratio)})" if note else "")
        verdict = "" if ok is None else ("ok" if ok(ratio) else "MISSED")
        rows.append((bench, model, f"ratio {num} / {den}", value, goal, verdict))
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
    machine = None
    if args.device == "cpu":
        from benchmarks import roofline
        machine = alone(roofline.measure, quick=args.roofline == "quick")
        notes += machine.lines()
        print(machine.lines()[0], f"(load average {os.getloadavg()[0]:.2f})", flush=True)

    def report(bench, model, result, extra=()):
        new = rows_for(bench, model, result, args.device) + list(extra)
        rows.extend(new)
        for r in new:  # as we go: a long run shows progress
            print(" | ".join(r), flush=True)

    for model in models:
        if "P1" in only:
            from benchmarks import decoding
            r = alone(decoding.run, model, args.workdir, args.device, args.reps, dialogs,
                             modes=args.cpu_dtypes.split(","), peer_threads=args.threads if args.peer else None)
            notes.append(f"P1 {model}: {r['context_tokens']}-token context, greedy, 20 tokens; same tokens on the fp32 "
                         "sides; " + "".join(f"--cpu-dtype {m}: {a} of {b} tokens equal fp32's; "
                                             for m, (a, b) in r["same_tokens"].items()))
            peer_rows = []
            if args.peer:
                from benchmarks import decoding as d, peer
                for mode in r["sizes"]:
                    ratio = common.median(r["times"][d.agent_side(mode)]) / common.median(r["times"][peer.SIDE])
                    peer_rows.append(("P1", model, f"ratio {d.agent_side(mode)} / {peer.SIDE}", f"{ratio:.2f}x",
                                      "<= 0.5x", "ok" if ratio <= 0.5 else "MISSED"))
            report("P1", model, r, peer_rows + (roofline.p1_rows(machine, model, r, common.median) if machine else []))
        if "P2" in only:
            from benchmarks import ranking
            r = alone(ranking.run_real, model, args.workdir, args.device, args.reps, dialogs, args.p2_examples)
            r["goals"] = real_p2_goals(r["limit"])
            notes.append(f"P2 real {model}: {r['examples']} consecutive held-out ConvAI2 validation examples "
                         f"(last 100 shipped dialogs), {r['candidates']} candidates; times per example; "
                         f"token-count limit {r['limit']:.2f}x = {r['full_tokens']} tokens of padded whole "
                         f"sequences / {r['shared_tokens']} tokens of contexts once + candidates; "
                         f"max |score difference| vs full sequences {r['max_score_diff']:.1e}")
            report("P2 real data", model, r)
            r = alone(ranking.run, model, args.workdir, args.device, args.reps, dialogs)
            notes.append(f"P2 one context {model}: one selected {r['context_tokens']}-token context (not "
                         f"representative: ConvAI2 contexts are ~100 tokens), {r['candidates']} candidates, "
                         f"max |score difference| {r['max_score_diff']:.1e}")
            report("P2 one context", model, r)
        if "P3" in only:
            from benchmarks import training
            for dtype in (["fp32", "bf16"] if args.device == "cpu" else ["bf16", "fp16"]):
                r = alone(training.run, model, args.workdir, args.device, args.reps, dialogs, batch, dtype, args.peak_tflops)
                notes.append(f"P3 {model} {dtype}: batch {batch} x 2 candidates, "
                             f"{r['tokens_per_step'][1]} tokens in the first timed step, {r['params'] / 1e6:.0f}M parameters")
                report("P3", f"{model} {dtype}", r,
                       roofline.p3_rows(machine, model, dtype, r, "agent train_step") if machine else ())
        if "P6" in only:
            from benchmarks import serving
            for turn, name in serving.TURNS:
                if name.split()[0] not in args.p6_messages.split(","):
                    continue
                r = alone(serving.run, model, args.workdir, args.device, args.reps, dialogs, turn=turn)
                notes.append(f"P6 {model} {name}: {r['sessions']} ConvAI2 dialogs at turn {turn + 1} "
                             f"(~{r['context_tokens']}-token contexts), greedy, 20 tokens each; same replies "
                             "on all sides; CPU seconds of this process (medians): "
                             + ", ".join(f"{k} {common.median(v):.1f} s" for k, v in r["cpu"].items()))
                report("P6", f"{model}, {name}", r,
                       roofline.p6_rows(machine, f"{model}, {name}", r, common.median, serving.SIDES[:2]) if machine else ())
                if args.peer and model == "smollm2-135m":
                    from benchmarks import peer_server
                    theirs = peer_server.run(r["contexts"], args.threads, args.reps)
                    notes.append(f"P6-peer {name}: {theirs['build']}, {args.threads} threads, the same context ids")
                    report("P6-peer", f"{model}, {name}", theirs,
                           peer_server.goal_rows(f"{model}, {name}", r, theirs, serving.AT_ONCE, serving.ONE_BY_ONE))
        if "P6B" in only:
            from benchmarks import serving
            for turn, name in serving.TURNS:
                if name.split()[0] not in args.p6_messages.split(","):
                    continue
                r = alone(serving.run, model, args.workdir, args.device, args.reps, dialogs, turn=turn,
                                sides=serving.P6B_SIDES, cpu_clock=args.device == "cpu")
                clock = "CPU seconds of this process; wall medians" if args.device == "cpu" else "wall seconds; the same"
                notes.append(f"P6b {model} {name}: P6's 16 sessions, and one request with top_k 10**6 sent "
                             "straight to the scheduler once their replies stream; it failed alone "
                             f"{r['poisoned_failed']} times in {args.reps} repetitions, the 16 replies equal "
                             f"P6's; times are {clock}: "
                             + ", ".join(f"{k} {common.median(v):.2f} s" for k, v in r["wall"].items()))
                report("P6b", f"{model}, {name}", r)
    if "P5" in only:
        from benchmarks import interactive
        r = interactive.run(args.interactive_model_file, args.device, args.reps)
        notes.append(f"P5 {args.interactive_model_file}: first reply {r['reply']!r} "
                     f"(set-up run, untimed: {r['setup_seconds']:.1f} s)")
        report("P5", args.interactive_model_file.replace("zoo:transfertransfo/", "").replace("/model", ""), r)

    if "P7" in only:
        from benchmarks import evaluation
        r = alone(evaluation.run, args.eval_model_file, os.path.join(args.workdir, "data"), args.device, dialogs,
                           args.p7_examples, 16, args.p7_skip_generation)
        name = args.eval_model_file.replace("zoo:transfertransfo/", "").replace("/model", "")
        what = "ppl + hits@1" if args.p7_skip_generation else "ppl + hits@1 + a generated reply (eval_model's default)"
        notes.append(f"P7 {name}: {r['examples']} held-out ConvAI2 validation examples per side, -bs 16, {what}; "
                     f"projected wall time of `parlai eval_model -t convai2 -dt valid` = "
                     f"{evaluation.OFFICIAL_VALID_EXAMPLES} examples at that rate")
        for side, per_s in r["examples_per_s"].items():
            row = ("P7", name, side, f"{per_s:.3f} examples/s",
                   f"{r['projected_hours'][side]:.2f} h for 7801 examples", "")
            rows.append(row)
            print(" | ".join(row), flush=True)
        for row in (roofline.p7_rows(machine, name, r, evaluation.SIDES) if machine else ()):
            rows.append(row)
            print(" | ".join(row), flush=True)
        ratio = r["examples_per_s"][evaluation.PACKED] / r["examples_per_s"][evaluation.PREVIOUS]
        row = ("P7", name, f"ratio {evaluation.PACKED} / {evaluation.PREVIOUS}", f"{ratio:.2f}x",
               ">= 1.5x", "ok" if ratio >= 1.5 else "MISSED")
        rows.append(row)
        print(" | ".join(row), flush=True)
    if "P8" in only:
        from benchmarks import self_chat
        r = alone(self_chat.run, args.self_chat_model_file, args.device, args.reps)
        notes.append(f"P8 {args.self_chat_model_file}: 8 chats of 4 turns (personas, then 3 exchanges), "
                     f"greedy, the same persona pairs on every side; {r['same_utterances']} of "
                     f"{r['utterances']} utterances at -bs 8 equal those at -bs 1; "
                     f"{r['same_with_cache'][0]} of {r['same_with_cache'][1]} with the persona cache equal those without; "
                     + ("times are CPU seconds of this process; wall medians: "
                        + ", ".join(f"{k} {common.median(v):.1f} s" for k, v in r["wall"].items())
                        if args.device == "cpu" else "wall times"))
        report("P8", args.self_chat_model_file.replace("zoo:transfertransfo/", "").replace("/model", ""), r)

    if "P9" in only:
        from benchmarks import host_overhead
        r = host_overhead.run(os.path.join(args.workdir, "p9"), args.reps, profile=args.p9_profile)
        notes.append(f"P9: host side per example (wall minus the model's forward, backward and optimizer step) "
                     f"of the real train_model / eval_model loops, -bs {r['batch']}, {r['steps']} steps, the recipe's "
                     f"README settings, a 1-layer 8-dim GPT-2 over the real vocabulary; the GPU budget is "
                     f"{r['budget_ms']} ms per training example")
        for side, host in r["host_ms"].items():
            model = common.median(r["model_ms"][side])
            goal = f"<= {r['budget_ms']} ms (GPU time per example)" if "num-workers" in side else ""
            verdict = ("ok" if common.median(host) <= r["budget_ms"] else "MISSED") if goal else ""
            waiting = common.median(r["waiting_ms"][side])
            extra = f", waiting on workers {waiting:.2f} ms" if waiting else ""
            row = ("P9", "host side", side, f"{common.median(host):.3f} ms/example (model {model:.1f} ms{extra})",
                   goal or f"{min(host):.3f}-{max(host):.3f}", verdict)
            rows.append(row)
            print(" | ".join(row), flush=True)
        for side, text in r["profiles"].items():
            print(f"P9 profile, {side}:\n{text}")

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
