"""P5 `parlai interactive -mf MODEL`: seconds from starting the command to the first reply.

The command gets one line on stdin; the clock stops at the first `[Agent]: ...` line it
prints. A first, untimed run does the once-per-machine set-up (a zoo model is built into
the datapath, the SmolLM2 GGUF de-quantized): P5 is the start-up a user sees every time after.
"""
import os
import re
import subprocess
import sys
import time

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
REPLY = re.compile(r"\[(?!context\]|persona)[^\]]+\]:\s+\S")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_reply_seconds(model_file, device, extra=(), timeout=300):
    cmd = [PARLAI, "interactive", "-mf", model_file, *extra] + (["--no-cuda"] if device == "cpu" else [])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        proc.stdin.write("hi! how are you today?\n")
        proc.stdin.close()
        lines = []
        for line in proc.stdout:
            lines.append(line)
            found = REPLY.search(ANSI.sub("", line))
            if found:
                return time.perf_counter() - start, ANSI.sub("", line)[found.start():].strip()
            if time.perf_counter() - start > timeout:
                break
        raise RuntimeError("no reply from parlai interactive:\n" + "".join(lines[-20:]))
    finally:
        proc.kill()
        proc.wait()


def run(model_file, device, reps, extra=()):
    setup, _ = first_reply_seconds(model_file, device, extra, timeout=1200)
    times, reply = [], None
    for _ in range(reps):
        seconds, reply = first_reply_seconds(model_file, device, extra)
        times.append(seconds)
    return {"times": {"parlai interactive: first reply": times}, "reply": reply, "setup_seconds": setup}
