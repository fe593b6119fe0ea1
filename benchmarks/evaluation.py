"""P7 full-evaluation throughput of the embedded model: examples/s of `eval_model`'s path
and the projected wall time of `parlai eval_model -t convai2 -dt valid` (7801 examples).

Real held-out ConvAI2 validation examples (the last 100 shipped dialogs) go through what
ParlAI's batch world does for each batch: every example observed, then one `batch_act` of
`-bs` examples (`eval_step`: ppl + hits@1 over the 20 candidates, and a generated reply
unless `--skip-generation true`). One agent, one model in memory; the sides alternate
every two batches, so the shared machine's load hits them alike:

- "previous path": the code path as it was when P7 was set (issue 16): candidates ranked
  over a cached context (`DoubleHeads.candidate_path = "cached"`), the generator running
  each context again, whole (no persona cache), ParlAI's nucleus sampling sorting the
  vocabulary, and a decoding cache copied at every step (concatenation).
- "packed rows": today's: packed passes by length band, the generator continuing the
  ranked contexts, nucleus sampling over the top k, the cache grown in place.
- the same in `--bf16 true`.
"""
import contextlib
import time

import torch

from benchmarks.common import double_heads, message, observed, sync

OFFICIAL_VALID_EXAMPLES = 7801  # ConvAI2 valid_self_original, what `-t convai2 -dt valid` serves
PREVIOUS, PACKED, PACKED_BF16 = "previous path, fp32", "packed rows, fp32", "packed rows, bf16"
SIDES = {PREVIOUS: False, PACKED: False, PACKED_BF16: True}  # name: --bf16


@contextlib.contextmanager
def previous_path(agent):
    """The agent as it evaluated before issue 16's changes (see the module docstring)."""
    from transformers.cache_utils import DynamicLayer

    from parlai_transfertransfo.agent import nucleus
    from parlai_transfertransfo.recipe import kv_cache

    heads, model = double_heads(agent), agent.model
    saved = (heads.candidate_path, model.persona_cache, nucleus.faster, kv_cache.GrowingLayer.update)
    heads.candidate_path, model.persona_cache = "cached", None
    nucleus.faster = lambda search: search  # ParlAI's NucleusSampling, sorting
    kv_cache.GrowingLayer.update = DynamicLayer.update  # transformers' concatenation
    try:
        yield
    finally:
        heads.candidate_path, model.persona_cache, nucleus.faster, kv_cache.GrowingLayer.update = saved


def make_eval_agent(model_file, datapath, device, batch_size, skip_generation):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    argv = ["-mf", model_file, "--datapath", datapath, "-bs", str(batch_size),
            "--skip-generation", str(skip_generation).lower()]
    argv += ["--no-cuda"] if device == "cpu" else ["--gpu", "0"]
    opt = ParlaiParser(True, True).parse_args(argv)
    return create_agent(opt, requireModelExists=True)


def run(model_file, datapath, device, dialogs, n_examples=512, batch_size=16, skip_generation=False):
    agent = make_eval_agent(model_file, datapath, device, batch_size, skip_generation)
    agent.model.eval()
    msgs = [message(d, t, "eval") for d in dialogs[-100:] for t in range(len(d[1]))][:n_examples]
    batches = [msgs[i:i + batch_size] for i in range(0, len(msgs), batch_size)]

    def evaluate(side, batch, seed=None):
        agent.opt["bf16"] = SIDES[side]
        with previous_path(agent) if side == PREVIOUS else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            out = agent.batch_act([observed(agent, m) for m in batch])
        assert all(o.get("text_candidates") for o in out)
        return [(o["text_candidates"], o.get("text")) for o in out]

    # Same computation first: both fp32 paths rank the first batch alike and, from the same
    # random seed, sample the same replies.
    if evaluate(PREVIOUS, batches[0], seed=0) != evaluate(PACKED, batches[0], seed=0):
        raise AssertionError("P7: the previous and packed paths rank or reply differently")

    names, seconds = list(SIDES), {side: 0.0 for side in SIDES}
    for k, i in enumerate(range(0, len(batches), 2)):
        for side in names[k % len(names):] + names[: k % len(names)]:
            sync(device)
            start = time.perf_counter()
            for batch in batches[i:i + 2]:
                evaluate(side, batch)
            sync(device)
            seconds[side] += time.perf_counter() - start
    agent.opt["bf16"] = False
    per_s = {side: len(msgs) / s for side, s in seconds.items()}
    from benchmarks.roofline import model_sizes

    contexts = sum(len(observed(agent, m)["text_vec"]) for m in msgs)  # each candidate + its speaker and <eos>
    candidates = sum(len(agent.dict.txt2vec(c)) + 2 for m in msgs for c in m["label_candidates"])
    return {"examples": len(msgs), "seconds": seconds, "examples_per_s": per_s, "batch_size": batch_size,
            "sizes": model_sizes(double_heads(agent).lm), "tokens_per_example": (contexts + candidates) / len(msgs),
            "projected_hours": {side: OFFICIAL_VALID_EXAMPLES / v / 3600 for side, v in per_s.items()}}
