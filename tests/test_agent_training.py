"""What the agent trains on: the two losses and their weights, the distractors, the persona
permutations, and the recipe's defaults, each checked against values computed here."""
import json

import pytest
import torch
import torch.nn.functional as F
from parlai.core.agents import create_agent
from parlai.core.message import Message
from parlai.core.params import ParlaiParser

from parlai_transfertransfo.recipe import segments
from test_agent import CONVAI2_800, first_example, make_agent


def training_examples(n):
    """The first n examples of the real ConvAI2 validation file, each a whole context, with
    `labels` (what train_model sends) and the file's 20 label candidates."""
    examples, persona, history = [], [], []
    with open(CONVAI2_800) as f:
        for line in f:
            body = line.rstrip("\n").split(" ", 1)[1]
            if body.startswith("your persona: "):
                persona.append(body)
                continue
            text, label, _, cands = body.split("\t")
            examples.append(Message({"text": "\n".join(persona + history + [text]), "labels": [label],
                                     "label_candidates": cands.split("|"), "episode_done": True}))
            history += [text, label]
            if len(examples) == n:
                return examples


def recipe_batch_of(agent, batch):
    """The tensors compute_loss hands the model's forward for this batch."""
    seen = []
    forward = agent.model.forward
    agent.model.forward = lambda *recipe_batch: seen.append(recipe_batch) or forward(*recipe_batch)
    try:
        with torch.no_grad():
            agent.compute_loss(batch)
    finally:
        agent.model.forward = forward
    return seen[0]


def observed(agent, examples):
    """The agent's observation of each example, each a conversation of its own."""
    observations = []
    for example in examples:
        agent.reset()
        observations.append(agent.observe(Message(example)))
    agent.reset()
    return observations


def training_batch(agent, examples):
    """The batch train_step would build, with the model in eval mode (no dropout)."""
    agent.model.eval()
    agent.is_training = True
    return agent.batchify(observed(agent, examples))


def whole_sequence_losses(agent, batch, n_candidates):
    """(LM loss, MC loss) of the original recipe, each candidate run as its own whole
    sequence: the LM loss over every gold reply token (and <eos>) of the batch, the MC loss
    the mean cross-entropy of each example's candidates (distractors first, gold last)."""
    heads, nll, tokens, mc = agent.model.double_heads, 0.0, 0, []
    for (persona, history), label, cands in zip(batch.segments, batch.labels, batch.candidates):
        replies = segments.distractors(label, cands, n_candidates - 1) + [label]
        logits = []
        for reply in replies:
            instance = segments.build_instance(persona, history, agent.dict.txt2vec(reply), agent.special)
            with torch.no_grad():
                lm_logits, mc_logit = heads(torch.tensor([instance["input_ids"]]),
                                            torch.tensor([instance["token_type_ids"]]),
                                            torch.tensor([instance["mc_token_ids"]]))
            logits.append(float(mc_logit[0]))
        labels = torch.tensor(instance["lm_labels"][1:])  # the gold reply's, last
        nll += float(F.cross_entropy(lm_logits[0, :-1], labels, reduction="sum"))
        tokens += int(labels.ne(-100).sum())
        mc.append(float(F.cross_entropy(torch.tensor([logits]), torch.tensor([len(replies) - 1]))))
    return nll / tokens, sum(mc) / len(mc)


def test_lm_and_mc_coefficients_weight_the_two_losses(tiny_gpt2_dir, tmp_path):
    """loss = --lm-coef x LM loss + --mc-coef x MC loss, with the two losses far apart so
    that swapped or ignored coefficients give another number."""
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--num-candidates", 4, "--lm-coef", 2.0, "--mc-coef", 0.5)
    batch = training_batch(agent, training_examples(3))
    with torch.no_grad():
        loss = float(agent.compute_loss(batch))
    lm_loss, mc_loss = whole_sequence_losses(agent, batch, 4)
    assert abs(lm_loss - mc_loss) > 1.0
    assert loss == pytest.approx(2.0 * lm_loss + 0.5 * mc_loss, rel=1e-5)


def test_mc_coef_0_turns_the_mc_loss_off(tiny_gpt2_dir, tmp_path):
    """--mc-coef 0: the loss is the LM loss alone, no MC metric is reported, and the MC
    head gets no gradient (with --mc-coef 1 it does)."""
    examples = training_examples(3)
    for mc_coef in (1.0, 0.0):
        agent = make_agent(tiny_gpt2_dir, tmp_path, "--num-candidates", 4, "--mc-coef", mc_coef)
        batch = training_batch(agent, examples)
        agent.model.zero_grad(set_to_none=True)
        loss = agent.compute_loss(batch)
        loss.backward()
        grad = agent.model.double_heads.lm.multiple_choice_head.summary.weight.grad
        assert (grad is not None and float(grad.abs().sum()) > 0) == (mc_coef > 0)
        lm_loss, mc_loss = whole_sequence_losses(agent, batch, 4)
        assert float(loss) == pytest.approx(lm_loss + mc_coef * mc_loss, rel=1e-5)
        metrics = agent.batch_act(observed(agent, examples[:1]))[0]["metrics"]  # train_step
        assert "loss" in metrics
        assert ("mc_loss" in metrics, "mc_acc" in metrics) == (mc_coef > 0, mc_coef > 0)


def test_examples_without_candidates_take_distractors_from_the_rest_of_the_batch(tiny_gpt2_dir, tmp_path):
    """No label_candidates: each example's distractors are the other examples' gold
    replies, its own gold reply last, and the MC loss is computed over them."""
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--num-candidates", 3)
    examples = training_examples(3)
    for example in examples:
        del example["label_candidates"]
    batch = training_batch(agent, examples)
    ids, types, mask, owner, cand_ids, cand_types, lengths, gold_rows = recipe_batch_of(agent, batch)
    cands = [agent.dict.vec2txt(cand_ids[j, 1 : lengths[j] - 1].tolist()) for j in range(len(owner))]
    labels = [e["labels"][0] for e in examples]
    for i, label in enumerate(labels):
        mine = [c for c, o in zip(cands, owner.tolist()) if o == i]
        assert mine[-1] == label and cands[gold_rows[i]] == label
        assert sorted(mine[:-1]) == sorted(l for l in labels if l != label)
    assert "mc_loss" in agent._local_metrics


def test_personality_permutations_train_every_rotation_and_report_once_per_example(tiny_gpt2_dir, tmp_path):
    """--personality-permutations 2: each example trains on its persona and on the persona
    rotated by one sentence (the recipe's: the last sentence moves first), each with the
    same history and candidates; ParlAI still gets one metric per example."""
    examples = training_examples(2)
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--personality-permutations", 2, "--num-candidates", 2)
    batch = training_batch(agent, examples)
    ids, types, mask = recipe_batch_of(agent, batch)[:3]
    contexts = [ids[r][mask[r].bool()].tolist() for r in range(ids.size(0))]
    assert len(contexts) == 4  # example-major: (example 0, rotations 0 and 1), (example 1, ...)
    for e, (persona, history) in enumerate(batch.segments):
        rotated = [persona[-1]] + persona[:-1]
        assert rotated != persona
        assert contexts[2 * e] == segments.build_prefix(persona, history, agent.special)[0]
        assert contexts[2 * e + 1] == segments.build_prefix(rotated, history, agent.special)[0]
    replies = agent.batch_act(observed(agent, examples))
    assert len(replies) == 2
    assert [r["metrics"]["mc_acc"]._denom for r in replies] == [2, 2]  # both rotations, pooled


def test_a_new_model_file_gets_the_recipes_defaults(tiny_gpt2_dir, tmp_path):
    """Nothing but the model: lr 6.25e-5 with AdamW, gradient clipping at 1.0, and nucleus
    sampling with top-p 0.9 at temperature 0.7, in the saved .opt and in what is built."""
    from parlai_transfertransfo.agent.nucleus import TopKNucleusSampling

    opt = ParlaiParser(True, True).parse_args([
        "-m", "transfertransfo", "--model-name", tiny_gpt2_dir, "-mf", str(tmp_path / "model"),
        "--datapath", str(tmp_path),
    ])
    agent = create_agent(opt)
    agent.save()
    with open(tmp_path / "model.opt") as f:
        saved = json.load(f)
    assert {k: saved[k] for k in ("learningrate", "optimizer", "gradient_clip", "inference", "topp", "temperature")} == {
        "learningrate": 6.25e-5, "optimizer": "adamw", "gradient_clip": 1.0,
        "inference": "nucleus", "topp": 0.9, "temperature": 0.7,
    }
    assert type(agent.optimizer) is torch.optim.AdamW
    assert [group["lr"] for group in agent.optimizer.param_groups] == [6.25e-5]
    search = agent._treesearch_factory("cpu")
    # ParlAI's nucleus sampling, drawing its tokens without the sort (nucleus.py)
    assert type(search) is TopKNucleusSampling and search.p == 0.9 and agent.temperature == 0.7
