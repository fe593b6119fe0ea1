"""The persona cache (persona_cache.py): a chat's `<bos> + persona` keys/values, reused by its
later turns, give the replies, beam scores and logits of running every context whole,
batched or alone; weight changes empty it; memory stays under its bound."""
import os

import pytest
import torch
from parlai.core.agents import create_agent
from parlai.core.message import Message
from parlai.core.params import ParlaiParser
from parlai.core.worlds import create_task
from transformers import MistralConfig, MistralForCausalLM

from conftest import TEST_DATA
from parlai_transfertransfo.recipe.double_heads import DoubleHeads
from parlai_transfertransfo.recipe.persona_cache import PersonaCache

CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")
TURNS = (1, 3, 2)  # of the first real dialogs: at -bs 2, a new persona joins a batch with a known one


@pytest.fixture(scope="module")
def chats_file(tmp_path_factory):
    """The first TURNS turns of the first real ConvAI2 validation dialogs."""
    lines, dialogs = [], 0
    with open(CONVAI2_800) as f:
        for line in f:
            number, body = line.split(" ", 1)
            if number == "1":
                dialogs, turns = dialogs + 1, 0
                if dialogs > len(TURNS):
                    break
            turns += not body.startswith("your persona:")
            if turns <= TURNS[dialogs - 1]:
                lines.append(line)
    path = tmp_path_factory.mktemp("persona-cache") / "chats.txt"
    path.write_text("".join(lines))
    return str(path)


def agent_for(backbone, chats_file, tmp_path, *args):
    opt = ParlaiParser(True, True).parse_args([
        "-m", "transfertransfo", "--model-name", backbone, "--datapath", str(tmp_path),
        "-t", "convai2_file", "--convai2-file", chats_file, "-dt", "valid", "--skip-generation", "false",
        "--rank-candidates", "false", "--label-truncate", "6", *map(str, args),
    ])
    return opt, create_agent(opt)


def evaluate(opt, agent, batchsize, cache):
    """eval_model's loop over every chat's turns: (message, reply, beam texts and scores,
    ppl) for each turn, sorted (batched worlds interleave the chats)."""
    agent.model.persona_cache = cache
    world = create_task({**opt, "batchsize": batchsize}, agent)
    out = []
    while not world.epoch_done():
        world.parley()
        for acts in ([w.get_acts() for w in world.worlds] if batchsize > 1 else [world.get_acts()]):
            if acts[0].get("text") is not None:
                act = acts[1]
                out.append((acts[0]["text"], act["text"], [(t, float(s)) for t, s in act["beam_texts"]],
                            act["metrics"]["ppl"].value()))
    return sorted(out)


def assert_same(a, b, tolerance=1e-5):
    assert [(x[0], x[1], [t for t, _ in x[2]]) for x in a] == [(x[0], x[1], [t for t, _ in x[2]]) for x in b]
    scores = lambda r: torch.tensor([s for x in r for s in [x[3]] + [s for _, s in x[2]]])  # noqa: E731
    torch.testing.assert_close(scores(a), scores(b), rtol=tolerance, atol=tolerance)


@pytest.fixture(scope="module")
def backbone_agent(request, chats_file, tmp_path_factory):
    return agent_for(request.getfixturevalue(request.param), chats_file, tmp_path_factory.mktemp("agent"),
                     "--inference", "beam", "--beam-size", 3)


# Llama's beam search: in the bf16 test below, also in float32
@pytest.mark.parametrize("backbone_agent, beam", [("tiny_gpt2_dir", 1), ("tiny_gpt2_dir", 3), ("tiny_llama_dir", 1)],
                         indirect=["backbone_agent"])
def test_cached_personas_give_the_replies_and_scores_of_whole_contexts(backbone_agent, beam):
    opt, agent = backbone_agent
    opt = {**opt, "inference": "greedy" if beam == 1 else "beam", "beam_size": beam}
    agent.opt.update(inference=opt["inference"], beam_size=beam)  # as --inference/--beam-size would
    agent.beam_size = beam
    whole = evaluate(opt, agent, 2, None)
    cache = PersonaCache()
    batched = evaluate(opt, agent, 2, cache)
    # each persona runs once; each turn reads it twice: its ppl pass, then the generator
    # (the ppl pass's contexts are cut to the gold reply, so the generator runs its own)
    assert (cache.misses, cache.hits) == (len(TURNS), 2 * sum(TURNS) - len(TURNS))
    alone = evaluate(opt, agent, 1, cache)  # every persona read back
    assert (cache.misses, cache.hits) == (len(TURNS), 4 * sum(TURNS) - len(TURNS))
    assert len(batched) == sum(TURNS) and len({r[1] for r in batched}) > 2  # varied replies
    assert_same(batched, whole)
    assert_same(alone, whole)


def test_bf16_replies_equal_with_and_without_the_cache(tiny_llama_dir, chats_file, tmp_path):
    """--bf16: the cache keeps what autocast computes, keyed by its dtype: the same replies,
    and float32 never reads bf16 entries."""
    opt, agent = agent_for(tiny_llama_dir, chats_file, tmp_path, "--inference", "beam", "--beam-size", 2,
                           "--bf16", "true")
    cache = PersonaCache()
    cached = evaluate(opt, agent, 2, cache)
    assert cache.hits > 0 and all(key[2] == torch.bfloat16 for key in cache.entries)
    # bf16 kernels round differently for a persona run alone than inside the whole context:
    # a beam score of -52.7 moved by 3e-3 (rel 6e-5) in a full-suite run; stale or misplaced
    # keys/values move them by 1e-1 and more
    assert_same(cached, evaluate(opt, agent, 2, None), tolerance=1e-3)
    agent.opt["bf16"] = False  # the same chats in float32 beam search, the bf16 entries still there
    assert_same(evaluate(opt, agent, 2, cache), evaluate(opt, agent, 2, None))


@pytest.fixture(scope="module")
def llama_agent(tiny_llama_dir, chats_file, tmp_path_factory):
    return agent_for(tiny_llama_dir, chats_file, tmp_path_factory.mktemp("agent"), "--inference", "greedy")[1]


def encoder_logits(agent, texts):
    """Step 0 logits of the agent's encoder for fresh chats that open with `texts`."""
    observations = []
    for text in texts:
        agent.reset()
        observations.append(agent.observe(Message({"text": text, "episode_done": False})))
    agent.reset()
    agent.model.eval()
    batch = agent.batchify(observations)
    with torch.no_grad():
        prefix, _ = agent.model.encoder(*agent._encoder_input(batch))
    return prefix.last_logits


PERSONA = "your persona: i like to ski.\nyour persona: i have a dog named max.\n"
TEXTS = [PERSONA + "hi there!", "your persona: i am a nurse.\nhello , how are you today ?",
         PERSONA + "what do you do for fun on weekends with your family?"]


def test_changed_weights_empty_the_cache(llama_agent):
    """An optimizer step, or weights loaded into a submodule (as LoRA adapters are),
    changes what the persona's keys/values are: the cache must not serve the old ones."""
    model = llama_agent.model
    model.persona_cache = PersonaCache()
    encoder_logits(llama_agent, TEXTS)
    assert len(model.persona_cache) == 2
    lm = model.double_heads.lm
    state = {k: v.clone() for k, v in lm.state_dict().items()}
    try:
        with torch.no_grad():
            for p in lm.parameters():  # what an optimizer step does: in place
                p.add_(torch.randn_like(p) * 0.05)
        after_step = encoder_logits(llama_agent, TEXTS)
        saved, model.persona_cache = model.persona_cache, None
        torch.testing.assert_close(after_step, encoder_logits(llama_agent, TEXTS), rtol=0, atol=1e-5)
        model.persona_cache = saved
        lm.load_state_dict(state)  # the submodule alone, as lora.py loads adapters
        loaded = encoder_logits(llama_agent, TEXTS)
        model.persona_cache = None
        torch.testing.assert_close(loaded, encoder_logits(llama_agent, TEXTS), rtol=0, atol=1e-5)
        assert not torch.allclose(loaded, after_step)
    finally:
        lm.load_state_dict(state)
        model.persona_cache = PersonaCache()


def test_memory_stays_under_its_bound_dropping_the_least_recently_used(llama_agent):
    model = llama_agent.model
    model.persona_cache = PersonaCache()
    encoder_logits(llama_agent, TEXTS[:1])
    one = model.persona_cache.bytes  # the first (longest) persona
    model.persona_cache = PersonaCache(max_bytes=int(1.9 * one))
    others = [f"your persona: i have {n} cats and {n} dogs.\nhi" for n in ("two", "three")]
    for text in (TEXTS[0], others[0], TEXTS[0], others[1]):  # others[0] least recent when others[1] comes
        encoder_logits(llama_agent, [text])
    cache = model.persona_cache
    assert cache.bytes <= 1.9 * one and len(cache) == 2
    kept = {llama_agent.dict.vec2txt(list(key[0][1:])) for key in cache.entries}
    assert kept == {"i like to ski.i have a dog named max.", "i have three cats and three dogs."}, kept
    assert (cache.hits, cache.misses) == (1, 3)


def test_training_and_models_without_a_reusable_start_never_use_it(llama_agent, tiny_openai_gpt_dir, tmp_path):
    model = llama_agent.model
    model.persona_cache = PersonaCache()
    model.train()  # dropout: keys/values of training mode are not inference's
    ids = torch.tensor([[llama_agent.special.bos, 5, 6, llama_agent.special.speaker2, 7]])
    with torch.no_grad():
        model.encoder(ids, torch.zeros_like(ids), torch.ones_like(ids), torch.tensor([0]))
    model.eval()
    model.encoder(ids, torch.zeros_like(ids), torch.ones_like(ids), torch.tensor([0]))  # gradients on
    assert len(model.persona_cache) == 0
    gpt = create_agent(ParlaiParser(True, True).parse_args([
        "-m", "transfertransfo", "--model-name", tiny_openai_gpt_dir, "--datapath", str(tmp_path)]))
    assert gpt.model.persona_cache is not None and not gpt.model.double_heads.reuses_prefixes()
    encoder_logits(gpt, TEXTS)  # OpenAI GPT keeps no keys/values: nothing to reuse
    assert len(gpt.model.persona_cache) == 0
    # a sliding window counts the padding between a cached persona and the rest
    window = MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=4)
    assert not DoubleHeads(MistralForCausalLM(window)).reuses_prefixes()
    assert DoubleHeads(MistralForCausalLM(MistralConfig(**{**window.to_dict(), "sliding_window": None}))).reuses_prefixes()
