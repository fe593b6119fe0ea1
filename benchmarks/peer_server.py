"""P6-peer: llama.cpp's `llama-server` (16 slots, continuous batching) on the very GGUF the
zoo model's backbone comes from, serving P6's 16 sessions over HTTP, side by side with P6.

Benchmark-only (`./install.sh peer` builds the server into the venv; the tests never run it).
Each session's context is P6's own token ids (the scheduler's `build_context`), special
tokens of ours mapped to the GGUF's end-of-text as in P1-peer (benchmarks/peer.py): the same
number of tokens, so the same work. 20 greedy tokens (`top_k` 1, EOS ignored), no prompt
cache between requests (P6's one-at-a-time side shares nothing between sessions either).
Sides: the 16 requests at once, and one at a time; reply tokens/s and latency p50/p95.
"""
import json
import os
import statistics
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from benchmarks import peer
from benchmarks.serving import _percentile

AT_ONCE, ONE_BY_ONE = "llama-server, 16 at once (-np 16 -cb)", "llama-server, one at a time"
SIDES = (AT_ONCE, ONE_BY_ONE)


def binary():
    path = os.path.join(sys.prefix, "peer", "bin", "llama-server")
    if not os.access(path, os.X_OK):
        raise SystemExit("P6-peer needs llama-server: ./install.sh peer")
    return path


def build_info():
    """Which llama.cpp build ran, and its flags (written by ./install.sh peer)."""
    try:
        with open(os.path.join(sys.prefix, "peer", "build-info")) as f:
            return "; ".join(line.strip() for line in f if line.strip())
    except OSError:
        return "unknown build"


class Server:
    """llama-server on a free local port, started and loaded before any clock starts."""

    def __init__(self, threads, slots=16, context_per_slot=512):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [binary(), "-m", peer.gguf_file(), "--host", "127.0.0.1", "--port", str(self.port),
             "-np", str(slots), "-cb", "-c", str(slots * context_per_slot), "-t", str(threads),
             "-tb", str(threads), "-b", "2048", "--no-warmup"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.close()
        raise SystemExit("P6-peer: llama-server did not start in 120 s")

    def complete(self, prompt, steps):
        """(token ids, latency) of `steps` greedy tokens after prompt ids."""
        body = {"prompt": prompt, "n_predict": steps, "ignore_eos": True, "top_k": 1, "temperature": 0,
                "cache_prompt": False, "return_tokens": True}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/completion", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as r:
            out = json.load(r)
        return out.get("tokens", []), time.perf_counter() - start

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run(contexts, threads, reps, steps=20):
    """P6's contexts (lists of our token ids) through llama-server: times, tok/s, latency."""
    from llama_cpp import Llama  # the GGUF's own end-of-text id and vocabulary size

    gguf = Llama(model_path=peer.gguf_file(), vocab_only=True, verbose=False)
    eos, vocab = gguf.token_eos(), gguf.n_vocab()
    prompts = [[t if t < vocab else eos for t in c] for c in contexts]
    server = Server(threads, slots=len(prompts))
    try:
        def side(name):
            start = time.perf_counter()
            if name == AT_ONCE:
                with ThreadPoolExecutor(len(prompts)) as pool:
                    results = list(pool.map(lambda p: server.complete(p, steps), prompts))
            else:
                results = [server.complete(p, steps) for p in prompts]
            if any(len(tokens) != steps for tokens, _ in results if tokens):
                raise AssertionError("P6-peer: llama-server stopped before 20 tokens")
            return time.perf_counter() - start, [latency for _, latency in results]

        side(AT_ONCE)  # warm-up: first allocations of every slot
        times, latencies = {s: [] for s in SIDES}, {s: [] for s in SIDES}
        for rep in range(reps):
            for name in SIDES[rep % 2:] + SIDES[:rep % 2]:
                seconds, lat = side(name)
                times[name].append(seconds)
                latencies[name] += lat
    finally:
        server.close()
    tokens = len(prompts) * steps
    return {
        "times": times,
        "tokens_per_s": {n: tokens / statistics.median(ts) for n, ts in times.items()},
        "latency": {n: (_percentile(ls, 50), _percentile(ls, 95)) for n, ls in latencies.items()},
        "build": build_info(),
    }



def goal_rows(model, ours, theirs, ours_at_once, ours_alone):
    """Our P6 against llama-server: 16 at once >= 3x its tok/s; a request alone no slower
    (median latency)."""
    ratio = ours["tokens_per_s"][ours_at_once] / theirs["tokens_per_s"][AT_ONCE]
    out = [("P6-peer", model, f"ratio tok/s {ours_at_once} / {AT_ONCE}", f"{ratio:.2f}x", ">= 3x",
            "ok" if ratio >= 3 else "MISSED")]
    ratio = ours["latency"][ours_alone][0] / theirs["latency"][ONE_BY_ONE][0]
    out.append(("P6-peer", model, f"ratio latency p50 {ours_alone} / {ONE_BY_ONE}", f"{ratio:.2f}x", "<= 1x",
                "ok" if ratio <= 1 else "MISSED"))
    return out
