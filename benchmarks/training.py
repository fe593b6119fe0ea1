"""P3 training throughput: the agent's `train_step` (what `train_model` calls through
`batch_act`) against a plain PyTorch loop over the very same padded tensors.

Plain loop = the original `train.py` update: double-heads forward with `labels` and
`mc_labels`, `lm_coef * lm_loss + mc_coef * mc_loss`, backward, clip to 1.0, AdamW step.
On CPU both sides run in fp32 and in bf16 (the agent with its `--bf16 true`, the plain
loop under torch.autocast); on `--device cuda` in bf16 and fp16 (the agent with ParlAI's
own `--fp16 true`, which halves its weights; the plain loop with autocast + GradScaler on
a float32 copy), with model FLOPs utilisation = 6 x parameters x tokens/s / bf16 peak.
fp16 is timed without the equality check: ParlAI's fp16 and autocast round differently.

Tokens are the recipe's: every candidate as a whole sequence (context + reply), what the
plain loop runs. The agent runs each context once and its candidates after it, packed in
rows (`DoubleHeads.recipe_losses`), so it does less work for the same batch: its tokens/s
(and MFU) are recipe-token equivalents, the speed a user sees, not the FLOPs it executes.
A third side runs the agent on its previous path (contexts cached, then each context's
candidates in one row over the cache, padded to the longest), after checking that both
paths give the same loss (1e-5 in fp32).
"""
import contextlib
import copy

import torch
import torch.nn.functional as F

from benchmarks.common import batchify, double_heads, interleaved, make_agent, median, message, observed

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40": 181e12}


def bf16_peak(override_tflops=None):
    if override_tflops:
        return override_tflops * 1e12
    name = torch.cuda.get_device_name(0)
    if "H100" in name and "PCIe" in name:
        return 756e12
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def recipe_batches(agent, dialogs, batch_size, n):
    """n batches of batch_size real ConvAI2 training examples, vectorized by the agent."""
    msgs = [message(d, t, "train") for d in dialogs for t in range(len(d[1]))]
    return [[observed(agent, m) for m in msgs[i * batch_size:(i + 1) * batch_size]] for i in range(n)]


def whole_sequences(model_inputs, cand_index, pad):
    """The recipe's own layout of the agent's batch: every candidate appended to its whole
    context, right-padded to [R, C, T] ids/types/labels, mc_index [R, C], gold [R]."""
    ids, types, mask, owner, cand_ids, cand_types, lengths, gold_rows = model_inputs
    rows, n_cands = cand_index.shape
    seqs = []
    for j in range(cand_ids.size(0)):
        ctx = mask[owner[j]].bool()
        n = int(lengths[j])
        labels = torch.full((int(ctx.sum()) + n,), -100)
        if j in gold_rows.tolist():
            labels[-(n - 1):] = cand_ids[j, 1:n]
        seqs.append((torch.cat([ids[owner[j]][ctx], cand_ids[j, :n]]),
                     torch.cat([types[owner[j]][ctx], cand_types[j, :n]]), labels))
    width = max(len(s[0]) for s in seqs)
    out_ids = torch.full((rows, n_cands, width), pad)
    out_types = torch.full((rows, n_cands, width), pad)
    out_labels = torch.full((rows, n_cands, width), -100)
    mc_index = torch.zeros((rows, n_cands), dtype=torch.long)
    for r in range(rows):
        for c in range(n_cands):
            s_ids, s_types, s_labels = seqs[int(cand_index[r, c])]
            out_ids[r, c, : len(s_ids)], out_types[r, c, : len(s_ids)] = s_ids, s_types
            out_labels[r, c, : len(s_ids)], mc_index[r, c] = s_labels, len(s_ids) - 1
    return out_ids, out_types, out_labels, mc_index, torch.full((rows,), n_cands - 1)


def plain_losses(heads, ids, types, labels, mc_index, gold):
    if heads.kind == "gpt2":
        out = heads.lm(ids, token_type_ids=types, mc_token_ids=mc_index, labels=labels, mc_labels=gold)
        return out.loss, out.mc_loss
    lm_logits, mc_logits = heads(ids, types, mc_index)  # full forward, LM logits everywhere
    lm_loss = F.cross_entropy(lm_logits[..., :-1, :].flatten(0, -2).float(), labels[..., 1:].flatten())
    return lm_loss, F.cross_entropy(mc_logits.float(), gold)


def run(model, workdir, device, reps, dialogs, batch_size=4, dtype="fp32", peak_tflops=None):
    extra = {"fp16": ["--fp16", "true"], "bf16": ["--bf16", "true"]}.get(dtype, [])
    agent = make_agent(model, workdir, device, "--skip-generation", "true", "--num-candidates", 2,
                       "-bs", batch_size, *extra)
    heads, opt = double_heads(agent), agent.opt
    obs_batches = recipe_batches(agent, dialogs, batch_size, reps + 1)
    tensors = []
    for obs in obs_batches:
        agent.is_training = True
        model_inputs, cand_index = agent._recipe_batch(batchify(agent, obs), True)
        assert bool(cand_index.ge(0).all()), "every example has its distractor"
        cpu = [t.cpu() for t in model_inputs]
        tensors.append(tuple(t.to(device) for t in whole_sequences(cpu, cand_index.cpu(), agent.special.pad)))
    tokens = [int(t[0].ne(agent.special.pad).sum()) for t in tensors]

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)

    def autocast(side):
        if half is None or side == "agent":  # the agent's own --fp16 / --bf16
            return contextlib.nullcontext()
        return torch.autocast(device_type=device, dtype=half)

    # Same computation first: the agent's loss equals the plain loop's (no dropout here):
    # to 1e-4 in fp32, to 2% where bf16 rounding differs with the order of operations.
    if dtype != "fp16":  # ParlAI's --fp16 casts the weights both sides share
        agent.model.eval()
        with torch.no_grad():
            ours = float(agent.compute_loss(batchify(agent, obs_batches[0])))
            with autocast("plain"):
                lm_loss, mc_loss = plain_losses(heads, *tensors[0])
            theirs = float(opt["lm_coef"] * lm_loss + opt["mc_coef"] * mc_loss)
            heads.candidate_path = "cached"  # the previous path: contexts cached, then candidates
            agent._local_metrics.clear()  # what batch_act does between two batches
            previous = float(agent.compute_loss(batchify(agent, obs_batches[0])))
            agent._local_metrics.clear()
            heads.candidate_path = "packed"
        if abs(ours - theirs) > (1e-4 if dtype == "fp32" else 0.02 * abs(theirs)):
            raise AssertionError(f"P3 {model} {dtype}: losses differ: {ours} vs {theirs}")
        if abs(ours - previous) > (1e-5 if dtype == "fp32" else 0.02 * abs(previous)):
            raise AssertionError(f"P3 {model} {dtype}: packed and cached losses differ: {ours} vs {previous}")

    if dtype == "fp16":  # the agent's --fp16 halved the shared weights: the plain loop gets
        heads = copy.deepcopy(heads).float()  # its own float32 copy, as autocast expects
    params = [p for p in heads.parameters() if p.requires_grad]
    inner = getattr(agent.optimizer, "optimizer", agent.optimizer)  # ParlAI's fp16 wrappers
    defaults = getattr(inner, "defaults", {})
    adamw = torch.optim.AdamW(params, **{k: defaults[k] for k in ("lr", "betas", "eps", "weight_decay")
                                          if k in defaults})
    scaler = torch.amp.GradScaler("cuda") if dtype == "fp16" else None

    step = {"plain": 0, "agent": 0, "cached": 0}

    def plain_step():
        ids, types, labels, mc_index, gold = tensors[step["plain"] % len(tensors)]
        step["plain"] += 1
        heads.train()
        adamw.zero_grad(set_to_none=True)
        with autocast("plain"):
            lm_loss, mc_loss = plain_losses(heads, ids, types, labels, mc_index, gold)
            loss = opt["lm_coef"] * lm_loss + opt["mc_coef"] * mc_loss
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(adamw)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(adamw) if scaler else adamw.step()
        if scaler:
            scaler.update()
        loss.item()

    def agent_step(path="packed"):
        counter = "agent" if path == "packed" else "cached"
        obs = obs_batches[step[counter] % len(obs_batches)]
        step[counter] += 1
        heads_of_agent = double_heads(agent)
        heads_of_agent.candidate_path = path
        try:
            with autocast("agent"):
                agent.batch_act(obs)
        finally:
            heads_of_agent.candidate_path = "packed"

    plain_step(), agent_step(), agent_step("cached")  # warm-up: optimizer state, allocator
    step.update(plain=1, agent=1, cached=1)
    times = interleaved({"plain PyTorch loop (train.py)": plain_step, "agent train_step": agent_step,
                         "agent train_step, previous cached path": lambda: agent_step("cached")},
                        reps, device)
    n_params = sum(p.numel() for p in heads.parameters())
    result = {"tokens_per_step": tokens, "times": times, "params": n_params, "dtype": dtype}
    # each side's i-th timed step ran on batch 1 + i: tokens/s per step, then the median
    result["tokens_per_s"] = {k: median([tokens[1 + i] / t for i, t in enumerate(v)]) for k, v in times.items()}
    if device == "cuda":
        peak = bf16_peak(peak_tflops)
        result["mfu"] = {k: (6 * n_params * v / peak if peak else None) for k, v in result["tokens_per_s"].items()}
    return result
