"""P1 reply latency: greedy, 20 tokens, ~200-token ConvAI2 context, through the agent's `act`.

Baselines on the same weights (the agent's own transformers model):
- no-cache loop: the original `interact.py` `sample_sequence` with `--no_sample`: every step
  rebuilds persona + history + reply-so-far and runs the whole sequence again;
- raw cached loop: the bare transformers model with its KV cache, the LM head on the last
  position only (the fastest plain use of the library).
All three ban the same tokens (`<bos>`, speakers, `<pad>`, and `<eos>` for all 20 steps, as
the agent's `--beam-min-length 20` does), so greedy decoding must give the same tokens.
"""
import torch

from benchmarks.common import double_heads, interleaved, make_agent, message, observed
from parlai_transfertransfo.recipe import segments

STEPS = 20


def _banned(special, vocab):
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[[special.bos, special.eos, special.speaker1, special.speaker2, special.pad]] = True
    return mask


def _pick(logits, banned):
    return int(logits.float().masked_fill(banned.to(logits.device), float("-inf")).argmax())


def _embeds(lm, ids, types):
    """The recipe's segment embedding for Llama-family models (GPT-2 takes token_type_ids)."""
    embed = lm.get_input_embeddings()
    return embed(ids) + embed(types)


def no_cache_loop(heads, persona, history, special, device):
    """interact.py: build_input_from_segments(..., with_eos=False) and a full forward per step."""
    lm, banned, out = heads.lm, _banned(special, heads.vocab_size), []
    with torch.no_grad():
        for _ in range(STEPS):
            inst = segments.build_instance(persona, history, out, special, with_eos=False)
            ids = torch.tensor([inst["input_ids"]], device=device)
            types = torch.tensor([inst["token_type_ids"]], device=device)
            if heads.kind == "gpt2":
                logits = lm(ids, token_type_ids=types).logits
            else:
                logits = lm(inputs_embeds=_embeds(lm, ids, types)).logits
            out.append(_pick(logits[0, -1], banned))
    return out


def raw_cached_loop(heads, prefix_ids, prefix_types, reply_type, special, device):
    """Context + `<speaker1>` once, then one token per step from the model's own KV cache."""
    lm, banned, out = heads.lm, _banned(special, heads.vocab_size), []
    ids = torch.tensor([list(prefix_ids) + [special.speaker1]], device=device)
    types = torch.tensor([list(prefix_types) + [reply_type]], device=device)
    cache = None
    with torch.no_grad():
        for _ in range(STEPS):
            if heads.kind == "gpt2":
                o = lm.transformer(input_ids=ids, token_type_ids=types, cache=cache, use_cache=True)
                logits = lm.lm_head(o.last_hidden_state[:, -1])
            else:
                o = lm(inputs_embeds=_embeds(lm, ids, types), cache=cache, use_cache=True, logits_to_keep=1)
                logits = o.logits[:, -1]
            cache = o.cache
            out.append(_pick(logits[0], banned))
            ids = torch.tensor([[out[-1]]], device=device)
            types = torch.tensor([[reply_type]], device=device)
    return out


UNSPLIT = "agent observe+act, one-row matmuls unsplit (before row blocks)"


def _without_row_blocks(heads):
    """Switch off the decoding step's row blocks (recipe/row_blocks.py); False where the
    step does not run (not a plain Llama) or has none on this machine."""
    with torch.inference_mode():
        step = heads._decode_step()
    if step is None or step.one_row is None:
        return False
    step.one_row = step.head = None
    return True


def agent_side(mode):
    return "agent observe+act" + ("" if mode == "fp32" else f", --cpu-dtype {mode}")


def run(model, workdir, device, reps, dialogs, context_tokens=200, modes=("fp32",), peer_threads=None):
    """modes: the agent's --cpu-dtype sides (fp32 always; the others' greedy tokens are
    counted against fp32's, not required equal). peer_threads: add llama.cpp on the same
    GGUF (benchmarks/peer.py, SmolLM2 only) on that many threads."""
    from benchmarks.common import context_near
    from benchmarks.roofline import model_sizes

    args = ["--inference", "greedy", "--skip-generation", "false", "--beam-min-length", STEPS,
            "--label-truncate", STEPS, "--max-history", 4, "--interactive-mode", "true"]
    agent = make_agent(model, workdir, device, *args, "--cpu-dtype", "fp32")
    agent.model.eval()
    heads, special = double_heads(agent), agent.special
    dialog, turn, length = context_near(agent, dialogs, context_tokens)
    chat = message(dialog, turn)
    chat["episode_done"] = False
    obs = observed(agent, chat)
    persona, history = obs["tt_persona"], obs["tt_history"]
    prefix_ids, prefix_types = obs["text_vec"].tolist(), obs["text_types"].tolist()

    def agent_reply(agent=agent):
        agent.reset()
        agent.observe(dict(chat))
        return agent.act()["text"]

    # Same computation first: the three loops must pick the same greedy tokens.
    slow = no_cache_loop(heads, persona, history, special, device)
    fast = raw_cached_loop(heads, prefix_ids, prefix_types, obs["reply_type"], special, device)
    text = agent_reply()
    # The agent runs a 21st step for `<eos>` (forced when not chosen): same 20 tokens, one more call.
    if slow != fast or text != agent._v2t(fast):
        raise AssertionError(f"P1 {model}: loops disagree\n{slow}\n{fast}\n{text!r}")

    sides = {
        "no-cache loop (interact.py)": lambda: no_cache_loop(heads, persona, history, special, device),
        "raw cached loop (transformers)": lambda: raw_cached_loop(
            heads, prefix_ids, prefix_types, obs["reply_type"], special, device),
        "agent observe+act": agent_reply,
    }
    sizes, same = {"fp32": model_sizes(heads.lm)}, {}
    reference = agent.dict.txt2vec(text)
    for mode in modes:
        if mode == "fp32" or device != "cpu":
            continue
        other = make_agent(model, workdir, device, *args, "--cpu-dtype", mode)
        sizes[mode] = model_sizes(double_heads(other).lm)
        tokens = other.dict.txt2vec(agent_reply(other))
        same[mode] = (sum(a == b for a, b in zip(tokens, reference)), len(reference))
        sides[agent_side(mode)] = lambda other=other: agent_reply(other)
    if device == "cpu":  # the same fp32 agent with its one-row matmuls as MKL runs them
        unsplit = make_agent(model, workdir, device, *args, "--cpu-dtype", "fp32")
        unsplit.model.eval()
        if _without_row_blocks(double_heads(unsplit)):
            if agent_reply(unsplit) != text:
                raise AssertionError(f"P1 {model}: row blocks changed the reply")
            sides[UNSPLIT] = lambda: agent_reply(unsplit)
    if peer_threads:
        from benchmarks import peer
        sides[peer.SIDE] = peer.Reply(prefix_ids + [special.speaker1], peer_threads, STEPS)
    times = interleaved(sides, reps, device)
    return {"context_tokens": length, "times": times, "sizes": sizes, "same_tokens": same}
