"""The agent in-process, on each backbone: what it ranks, generates and trains on."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from parlai.core.agents import create_agent
from parlai.core.message import Message
from parlai.core.params import ParlaiParser

from conftest import TEST_DATA
from parlai_transfertransfo.recipe import segments

CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")


def first_example():
    """The first example of the real ConvAI2 validation file, as the convai2 teacher sends it."""
    persona, text = [], None
    with open(CONVAI2_800) as f:
        for line in f:
            body = line.rstrip("\n").split(" ", 1)[1]
            if body.startswith("your persona: "):
                persona.append(body)
                continue
            text, label, _, cands = body.split("\t")
            return Message({
                "text": "\n".join(persona + [text]),
                "eval_labels": [label],
                "label_candidates": cands.split("|"),
                "episode_done": False,
            })


def make_agent(model_dir, tmp_path, *args):
    parser = ParlaiParser(True, True)
    opt = parser.parse_args([
        "-m", "transfertransfo", "--model-name", model_dir, "--datapath", str(tmp_path),
        "--inference", "greedy", "--skip-generation", "false", *map(str, args),
    ])
    return create_agent(opt)


def whole_sequence_scores(agent, obs):
    """{candidate: (MC logit, mean LM loss of its tokens and <eos>)}, each candidate its own
    whole sequence (persona + history + candidate), right-padded into one [1, C, T] batch
    through the model's plain forward pass, as the original recipe scores them:
    independent of the agent's cached-prefix ranking."""
    cands = obs["label_candidates"]
    instances = [segments.build_instance(obs["tt_persona"], obs["tt_history"], agent.dict.txt2vec(c), agent.special)
                 for c in cands]
    width = max(len(i["input_ids"]) for i in instances)
    ids = torch.full((1, len(cands), width), agent.special.pad)
    types, labels = ids.clone(), torch.full_like(ids, -100)
    for j, instance in enumerate(instances):
        n = len(instance["input_ids"])
        ids[0, j, :n], types[0, j, :n] = torch.tensor(instance["input_ids"]), torch.tensor(instance["token_type_ids"])
        labels[0, j, :n] = torch.tensor(instance["lm_labels"])
    mc_index = torch.tensor([[i["mc_token_ids"] for i in instances]])
    with torch.no_grad():
        lm_logits, mc_logits = agent.model.double_heads.eval()(ids, types, mc_index)
    nll = F.cross_entropy(lm_logits[0, :, :-1].transpose(1, 2), labels[0, :, 1:], reduction="none")
    mean_nll = nll.sum(1) / labels[0, :, 1:].ne(-100).sum(1)
    return {c: (float(mc_logits[0, j]), float(mean_nll[j])) for j, c in enumerate(cands)}


@pytest.fixture(params=["tiny_gpt2_dir", "tiny_openai_gpt_dir", "tiny_llama_dir"])
def backbone(request):
    return request.getfixturevalue(request.param)


def test_every_backbone_ranks_by_the_mc_head_and_reports_the_gold_replys_ppl(backbone, tmp_path):
    agent = make_agent(backbone, tmp_path)
    example = first_example()
    agent.observe(example)
    reply = agent.act()
    want = whole_sequence_scores(agent, agent.observation)
    assert reply["text_candidates"] == sorted(want, key=lambda c: -want[c][0])
    assert reply["cand_scores"].tolist() == pytest.approx([want[c][0] for c in reply["text_candidates"]], abs=1e-4)
    gold_loss = want[example["eval_labels"][0]][1]
    assert reply["metrics"]["ppl"].value() == pytest.approx(math.exp(gold_loss), rel=1e-4)
    assert reply["text"].strip()


@pytest.mark.parametrize("with_label", [True, False])
def test_rank_by_lm_ranks_by_the_mean_per_token_lm_loss(with_label, tiny_gpt2_dir, tmp_path):
    """--rank-by lm: candidates in increasing mean LM loss (over their tokens and <eos>),
    the score its negation; with the gold label (one pass gives ppl and ranking) and
    without (ranking alone). The MC head orders this example differently."""
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--skip-generation", "true", "--rank-by", "lm")
    example = first_example()
    if not with_label:
        del example["eval_labels"]
    reply = agent.batch_act([agent.observe(Message(example))])[0]
    want = whole_sequence_scores(agent, agent.observation)
    by_lm = sorted(want, key=lambda c: want[c][1])
    assert reply["text_candidates"] == by_lm
    assert reply["cand_scores"].tolist() == pytest.approx([-want[c][1] for c in by_lm], abs=1e-4)
    assert by_lm[:5] != sorted(want, key=lambda c: -want[c][0])[:5]


def test_every_backbone_trains_with_lm_and_mc_losses(backbone, tmp_path):
    agent = make_agent(backbone, tmp_path, "-lr", 1e-3, "--num-candidates", 3)
    example = first_example()
    example["labels"] = example.pop("eval_labels")
    losses = []
    for _ in range(4):
        agent.observe(Message(example))
        reply = agent.act()
        losses.append(reply["metrics"]["loss"].value() + reply["metrics"]["mc_loss"].value())
        agent.reset()
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("candidates", [True, False])
def test_verbose_evaluation_reports_each_label_tokens_loss(candidates, tiny_gpt2_dir, tmp_path):
    """ParlAI's -v (and --verbose-topk): per-token losses of the gold reply, which add up
    to the reported loss, and the top logits at each of its positions."""
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--verbose", "--verbose-topk", 3,
                       "--skip-generation", "true")
    example = first_example()
    if not candidates:
        del example["label_candidates"]
    reply = agent.batch_act([agent.observe(Message(example))])[0]
    tokens = reply["token_losses"]
    label = agent.dict.txt2vec(example["eval_labels"][0]) + [agent.special.eos]
    assert [t for t, _ in tokens] == [agent.dict[i] for i in label]
    loss = reply["metrics"]["loss"]
    assert sum(l for _, l in tokens) == pytest.approx(loss.value() * loss._denom, rel=1e-4)
    assert len(reply["logits"]) == len(label) and len(reply["logits"][0]) == 3


def test_plain_evaluation_spends_no_pass_on_label_logits(tiny_gpt2_dir, tmp_path):
    """eval_step always asks compute_loss for its output, but only -v reads the full gold
    reply logits: without it, ppl and hits@1 come from the one ranking pass, the same."""
    counts, results = {}, {}
    for verbose in (False, True):
        torch.manual_seed(0)  # the same new special-token rows in both agents
        agent = make_agent(tiny_gpt2_dir, tmp_path, *(["--verbose"] if verbose else []),
                           "--skip-generation", "true")
        label_logits = agent._label_logits
        calls = []
        agent._label_logits = lambda *a: calls.append(1) or label_logits(*a)
        reply = agent.batch_act([agent.observe(Message(first_example()))])[0]
        results[verbose] = (reply["metrics"]["ppl"].value(), reply["text_candidates"])
        counts[verbose] = len(calls)
    assert counts == {False: 0, True: 1}
    assert results[False][0] == pytest.approx(results[True][0], rel=1e-6)
    assert results[False][1] == results[True][1] and len(results[False][1]) == 20


def test_text_truncate_keeps_the_most_recent_context_within_its_tokens(tiny_gpt2_dir, tmp_path):
    """ParlAI's --text-truncate bounds the context (persona + history) in tokens, for
    training as for inference: the oldest history goes first, then persona sentences."""
    example = first_example()
    full = make_agent(tiny_gpt2_dir, tmp_path)
    full.observe(Message(example))
    assert len(full.observation["text_vec"]) == 39
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--text-truncate", 24)
    agent.observe(Message(example))
    ids = agent.observation["text_vec"].tolist()
    assert 0 < len(ids) <= 24
    assert len(agent.observation["tt_persona"]) < len(full.observation["tt_persona"])
    assert agent.dict.vec2txt(ids).endswith("hello what are doing today ?")  # the partner's line kept
    assert agent.observation["tt_persona"] == full.observation["tt_persona"][: len(agent.observation["tt_persona"])]
    example["labels"] = example.pop("eval_labels")
    agent.reset()
    agent.is_training = True
    batch = agent.batchify([agent.observe(Message(example))])
    (ids, *_), _ = agent._recipe_batch(batch, True)
    assert ids.size(1) <= 24


def test_bf16_autocast_computes_the_fp32_losses_to_bf16_precision_and_trains(tiny_llama_dir, tmp_path):
    """--bf16 runs the same recipe under bfloat16 autocast: float32 weights and optimizer,
    losses within bf16 rounding of the float32 run's, and they go down."""
    example = first_example()
    example["labels"] = example.pop("eval_labels")
    first_losses = {}
    for bf16 in ("false", "true"):
        torch.manual_seed(0)  # the same new MC head on both sides
        agent = make_agent(tiny_llama_dir, tmp_path, "-lr", 1e-3, "--num-candidates", 3,
                           "--bf16", bf16)
        losses = []
        for _ in range(4):
            agent.observe(Message(example))
            metrics = agent.act()["metrics"]
            losses.append(metrics["loss"].value() + metrics["mc_loss"].value())
            agent.reset()
        assert losses[-1] < losses[0]
        assert all(p.dtype == torch.float32 for p in agent.model.parameters())
        first_losses[bf16] = losses[0]
    assert first_losses["true"] == pytest.approx(first_losses["false"], rel=0.02)
    assert first_losses["true"] != first_losses["false"]  # really ran in bfloat16


def test_bf16_and_fp16_together_is_one_clear_error(tiny_llama_dir, tmp_path):
    from parlai_transfertransfo.errors import TransfertransfoError

    with pytest.raises(TransfertransfoError, match="--bf16 and --fp16"):
        make_agent(tiny_llama_dir, tmp_path, "--bf16", "true", "--fp16", "true")


@pytest.mark.parametrize("rank_by", ["mc", "lm"])
def test_one_evaluation_pass_gives_the_ppl_and_ranking_of_separate_passes(rank_by, backbone, tmp_path):
    """With the gold label among the candidates, eval_step scores context + candidates once
    for both ppl and hits@1; each must equal what its own pass gives."""
    agent = make_agent(backbone, tmp_path, "--skip-generation", "true", "--rank-by", rank_by)
    example = first_example()

    def evaluate(message):  # eval_model's path: batch_act (act would self-observe no text)
        agent.reset()
        return agent.batch_act([agent.observe(Message(message))])[0]

    together = evaluate(example)
    loss_alone = evaluate({k: v for k, v in example.items() if k != "label_candidates"})
    ranking_alone = evaluate({k: v for k, v in example.items() if k != "eval_labels"})
    # to fp32's resolution: the random tiny model's ppl is ~5e4, so one ulp of its loss (~1e-6)
    # moves it by ~0.05 when the two passes run the persona in different shapes
    assert together["metrics"]["ppl"].value() == pytest.approx(loss_alone["metrics"]["ppl"].value(), rel=1e-5)
    assert together["metrics"]["token_acc"] == loss_alone["metrics"]["token_acc"]
    assert together["text_candidates"] == ranking_alone["text_candidates"]
    assert together["text_candidates"] != example["label_candidates"]  # really ranked


def uncached_greedy(model, ids, types, reply_type, special, steps, no_repeat=False):
    """The original recipe's decoding loop: re-run the whole sequence for every token;
    `no_repeat`: no token twice (ParlAI's --beam-block-ngram 1)."""
    ids, types, out = list(ids) + [special.speaker1], list(types) + [reply_type], []
    banned = [special.bos, special.speaker1, special.speaker2, special.pad]
    for step in range(steps):
        logits, _ = model(torch.tensor([ids]), torch.tensor([types]))
        logits = logits[0, -1].clone()
        logits[banned] = float("-inf")
        if step == 0:
            logits[special.eos] = float("-inf")  # minimum length 1
        if no_repeat:
            logits[out] = float("-inf")
        token = int(logits.argmax())
        if token == special.eos:
            break
        out.append(token)
        ids.append(token)
        types.append(reply_type)
    return out


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_cached_decoding_equals_uncached_greedy_token_for_token(fixture, request, tmp_path):
    agent = make_agent(request.getfixturevalue(fixture), tmp_path, "--label-truncate", 20)
    agent.observe(first_example())
    reply = agent.act()
    obs = agent.observation
    expected = uncached_greedy(
        agent.model.double_heads, obs["text_vec"].tolist(), obs["text_types"].tolist(),
        obs["reply_type"], agent.special, 20,
    )
    assert reply["text"] == agent.dict.vec2txt(expected), (agent.dict.txt2vec(reply["text"]), expected)
    assert len(expected) > 0


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_decoder_from_the_encoder_state_equals_step_by_step_decoding(fixture, request, tmp_path):
    """The encoder runs `<speaker1>` with the context, so decoding step 0 costs no model
    call: teacher-forcing several tokens at once gives the same logits as one per step,
    and both equal the whole instance run in one forward pass."""
    agent = make_agent(request.getfixturevalue(fixture), tmp_path)
    agent.model.eval()
    batch = agent.batchify([agent.observe(first_example())])
    model, special = agent.model, agent.special
    reply = agent.dict.txt2vec("i like to read books .")
    tokens = torch.tensor([[special.speaker1] + reply])
    with torch.no_grad():
        states = model.encoder(*agent._encoder_input(batch))
        at_once, _ = model.decoder(tokens, states)
        steps, state = [], None
        for t in range(tokens.size(1)):
            logits, state = model.decoder(tokens[:, : t + 1], states, state)
            steps.append(logits[:, -1])
        types = batch.text_types[0].tolist() + [batch.reply_type[0].item()] * tokens.size(1)
        whole, _ = model.double_heads(torch.cat([batch.text_vec, tokens], 1), torch.tensor([types]))
    assert at_once.shape == (1, tokens.size(1), len(agent.dict))
    torch.testing.assert_close(torch.stack(steps, 1), at_once, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(at_once, whole[:, batch.text_vec.size(1):], atol=1e-4, rtol=1e-4)
