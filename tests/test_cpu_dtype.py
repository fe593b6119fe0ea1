"""`--cpu-dtype`: fp32 is today's model bit for bit; bf16 and int8 weights rank and reply
close to fp32 (agent, packed ranking with the persona cache, the server's scheduler); bad
input gets one line.

A tiny random Llama (the zoo model's family, our own MC head) with weights drawn wider than
transformers' default, so its logits are spread like a trained model's and a reduced format
that computed something else would flip its rankings and greedy tokens.
"""
import math
import os

import pytest
import torch

from conftest import FIRST_TEXT, TEST_DATA, _save_tiny, run_parlai
from eval_helpers import evaluate
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe import cpu_dtype, int8_linear
from serving_helpers import PERSONA, make_agent, one_thread, run_in_own_loop, save_model_file

DIALOGS = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")
DATA = ["-t", "convai2_file", "--convai2-file", DIALOGS, "--valid-split", 0.02]
TASK = DATA + ["-dt", "valid"]
CHATS = [["hi! how are you today?"], ["hello", "what do you do for a living ?", "i teach . and you ?"]]
NO_BF16 = cpu_dtype.Capability(avx512_bf16=False, amx=False, vnni=True)
AMX = cpu_dtype.Capability(avx512_bf16=True, amx=True, vnni=True)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, initializer_range=0.2)
    return _save_tiny(tmp_path_factory.mktemp("spread-llama"), config, LlamaForCausalLM)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, backbone):
    out = tmp_path_factory.mktemp("spread-llama-mf")
    return save_model_file(backbone, out)


@pytest.fixture(scope="module")
def agents(model_file):
    """One agent per mode, as `parlai interactive` / `eval_model` build them."""
    return {mode: make_agent(model_file, "--inference", "greedy", "--cpu-dtype", mode)
            for mode in ("auto", "fp32", "bf16", "int8")}


def reply(agent, utterances):
    agent.reset()
    agent.observe({"text": "your persona: " + PERSONA[0] + "\n" + "\n".join(utterances), "episode_done": False})
    return agent.act()["text"]


def greedy_tokens(agent, text):
    """The agent's greedy reply to one ConvAI2 context, as token ids."""
    agent.reset()
    agent.observe({"text": text, "episode_done": True})
    return agent.dict.txt2vec(agent.act()["text"])


def test_fp32_and_auto_without_bf16_hardware_leave_the_model_as_loaded(agents):
    """fp32 converts nothing: every parameter float32, no int8 layer, same replies."""
    for mode in ("fp32", "auto"):
        heads = agents[mode].model.double_heads
        assert {p.dtype for p in heads.parameters()} == {torch.float32}
        assert not any(isinstance(m, int8_linear.Int8Linear) for m in heads.modules())
    assert [reply(agents["fp32"], c) for c in CHATS] == [reply(agents["auto"], c) for c in CHATS]


def test_reduced_weights_are_what_they_say(agents):
    bf16 = agents["bf16"].model.double_heads
    assert bf16.lm.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert bf16.mc_head.weight.dtype == torch.float32  # our MC head stays fp32
    int8 = agents["int8"].model.double_heads
    layers = [m for m in int8.lm.modules() if isinstance(m, int8_linear.Int8Linear)]
    assert len(layers) == 2 * 7 + 1  # q k v o gate up down per layer, and the LM head
    assert all(m.qweight.dtype == torch.int8 for m in layers)


def test_reduced_modes_rank_and_score_close_to_fp32(agents):
    """eval_model's path (packed ranking, the persona cache, ppl from the same pass): the
    same hits@1 within one example in 16, and the gold replies' mean token NLL (log ppl)
    within 1% (a model this random has a ppl in the 10**5: log(vocab) is 10.8)."""
    ref = evaluate(agents["fp32"], *TASK, num_examples=16)
    for mode in ("bf16", "int8"):
        got = evaluate(agents[mode], *TASK, num_examples=16)
        assert abs(got["hits@1"] - ref["hits@1"]) <= 1 / 16, mode
        assert math.log(got["ppl"]) == pytest.approx(math.log(ref["ppl"]), rel=0.01), mode


def forced_logits(agent, text, tokens):
    """The logits [len(tokens) + 1, V] at each step of decoding `tokens` after a context,
    through the agent's encoder and its key/value-cache decoder (as its search runs them)."""
    agent.reset()
    batch = agent.batchify([agent.observe({"text": text, "episode_done": True})])
    with torch.no_grad():
        state = agent.model.encoder(*agent._encoder_input(batch))
        logits, _ = agent.model.decoder(torch.tensor([[agent.special.speaker1, *tokens]]), state)
    return logits[0]


def test_reduced_modes_decode_close_to_fp32(agents):
    """Over fp32's greedy replies to real ConvAI2 contexts, step by step on the decoder's
    key/value cache: the logits correlate with fp32's (r >= 0.99), and fp32's best token is
    in the reduced mode's top 3 at >= 90% of the steps (a random model's near-tied logits
    let bf16 flip a greedy choice, so whole replies would diverge after any flip)."""
    persona = FIRST_TEXT.rsplit("\n", 1)[0]
    texts = [FIRST_TEXT] + [persona + "\n" + "\n".join(c) for c in CHATS + [["do you have pets?"]]]
    replies = [greedy_tokens(agents["fp32"], t) for t in texts]
    for mode in ("fp32", "auto", "bf16", "int8"):
        steps = in_top = 0
        for text, tokens in zip(texts, replies):
            ref = forced_logits(agents["fp32"], text, tokens)
            got = forced_logits(agents[mode], text, tokens)
            assert got.dtype == torch.float32
            if mode in ("fp32", "auto"):
                assert torch.equal(got, ref)
                continue
            assert torch.corrcoef(torch.stack([got.flatten(), ref.flatten()]))[0, 1] >= 0.99, mode
            output = agents[mode].model.output  # the banned tokens out, as the search sees them
            best, top = output(ref).argmax(-1), output(got).topk(3, -1).indices
            in_top += int((top == best[:, None]).any(-1).sum())
            steps += best.numel()
        assert in_top >= 0.9 * steps, mode


def test_the_servers_scheduler_replies_as_the_agent_in_each_mode(agents):
    """The batching scheduler (its own key/value batch) over bf16 and int8 weights: each
    reply equals the same agent's own, in a batch of several."""
    from parlai_transfertransfo.serving.decoding import defaults_from_opt
    from parlai_transfertransfo.serving.scheduler import Job, Scheduler

    for mode in ("bf16", "int8"):
        agent = agents[mode]
        expected = [reply(agent, c) for c in CHATS]

        async def main():
            scheduler = Scheduler(agent).start()
            try:
                jobs = [Job(PERSONA[:1], c, defaults_from_opt(agent.opt)) for c in CHATS]
                for job in jobs:
                    scheduler.submit(job)
                return [[e for e in await collect(job) if e[0] == "end"][0][2]["text"] for job in jobs]
            finally:
                scheduler.stop()

        async def collect(job):
            return [event async for event in job.stream()]

        assert run_in_own_loop(main()) == expected, mode


def test_int8_linear_is_the_dequantized_matmul():
    """Both of its paths (a decoding step's few rows, a prefill's many), nn.Linear and
    GPT-2's transposed Conv1D, equal x @ (W_int8 * scale)^T + b to bf16's precision."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 40)
    conv = Conv1D(40, 48)
    torch.nn.init.normal_(conv.weight)
    for module, weight in ((linear, linear.weight), (conv, conv.weight.t())):
        q = int8_linear.Int8Linear.from_module(module)
        dequant = q.qweight.float() * q.scales[:, None]
        assert (dequant - weight).abs().max() <= q.scales.max() / 2 + 1e-6
        for rows in (1, 5, int8_linear.DECODE_ROWS + 3):
            x = torch.randn(2, rows, 48)
            want = x @ dequant.t() + module.bias
            got = q(x)
            assert got.shape == want.shape and got.dtype == torch.float32
            assert (got - want).abs().max() <= 0.02 * want.abs().max(), rows


def test_resolve_and_the_one_line_warning():
    assert cpu_dtype.resolve("auto", AMX) == cpu_dtype.resolve("auto", NO_BF16) == "fp32"
    assert cpu_dtype.resolve("int8", NO_BF16) == "int8"
    assert cpu_dtype.resolve("auto", AMX, training=True) == "fp32"
    with pytest.raises(TransfertransfoError, match="choose one of auto, fp32, bf16, int8"):
        cpu_dtype.resolve("fp16", AMX)
    for mode in ("bf16", "int8"):
        with pytest.raises(TransfertransfoError, match=f"--cpu-dtype {mode} .* training updates fp32"):
            cpu_dtype.resolve(mode, AMX, training=True)
    warning = cpu_dtype.slow_warning("bf16", NO_BF16)
    assert "\n" not in warning and "without AVX512-BF16 or AMX" in warning
    assert cpu_dtype.slow_warning("bf16", AMX) is None and cpu_dtype.slow_warning("int8", NO_BF16) is None


def test_the_cli_refuses_a_reduced_mode_to_train_and_an_unknown_mode_in_one_line(backbone, model_file, tmp_path):
    for args, expected in (
        (["train_model", "-m", "transfertransfo", "-mf", tmp_path / "m", "--model-name", backbone,
          "--cpu-dtype", "int8", *DATA, "-dt", "train", "--max-train-steps", 1],
         "--cpu-dtype int8 converts the weights for inference; training updates fp32 weights"),
        (["eval_model", "-mf", model_file, "--cpu-dtype", "fp16", *TASK], "--cpu-dtype fp16: choose one of"),
    ):
        status, out = run_parlai(*args, "--datapath", tmp_path / "data", timeout=120)
        assert status != 0
        lines = [l for l in out.splitlines() if "--cpu-dtype" in l]
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in out, out[-2000:]
