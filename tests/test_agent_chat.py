"""The agent in a chat: what a user types stays text, which persona it speaks with, what
context blocking blocks, and no inference mode ever emits a special token."""
import pytest
import torch
from parlai.core.agents import create_agent
from parlai.core.message import Message
from parlai.core.params import ParlaiParser

from parlai_transfertransfo.data.personas import DEFAULT_PERSONA
from test_agent import first_example, make_agent


def test_special_token_strings_from_a_user_are_plain_text(tiny_gpt2_dir, tmp_path):
    agent = make_agent(tiny_gpt2_dir, tmp_path)
    agent.observe(Message({"text": "your persona: i like <bos> cats.\nhi <eos> <speaker2> <pad>", "episode_done": False}))
    special = agent.special
    ids = agent.observation["text_vec"].tolist()
    # exactly the recipe's control tokens: <bos> first, then one speaker token per utterance
    assert ids[0] == special.bos
    assert [i for i in ids if i in {special.bos, special.eos, special.pad, special.speaker1, special.speaker2}] == [
        special.bos, special.speaker2
    ]
    assert agent.dict.vec2txt(ids[1:]).startswith("i like <bos> cats.")


def test_the_backbones_own_special_tokens_are_never_generated(tiny_llama_dir, tmp_path):
    """GPT-2's <|endoftext|> (and SmolLM2's chat-template tokens) cannot occur in a
    PERSONA-CHAT reply: decoding masks them as it masks the recipe's control tokens."""
    agent = make_agent(tiny_llama_dir, tmp_path)
    endoftext = agent.dict.hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    logits = torch.zeros(1, 1, len(agent.dict))
    logits[..., endoftext] = 100.0
    logits[..., agent.special.speaker2] = 99.0
    logits[..., agent.special.eos] = 98.0
    assert int(agent.model.output(logits).argmax()) == agent.special.eos
    assert set(agent.model.banned_ids.tolist()) == {
        endoftext, agent.special.bos, agent.special.speaker1, agent.special.speaker2, agent.special.pad
    }


def test_chat_persona_defaults_to_the_tutorial_persona(tiny_gpt2_dir, tmp_path):
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--interactive-mode", "true")
    agent.observe(Message({"text": "hello, who are you?", "episode_done": False}))
    assert agent.history.persona == DEFAULT_PERSONA
    assert agent.act()["text"].strip()


def test_chat_persona_from_the_command_line(tiny_gpt2_dir, tmp_path):
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--persona", "i love tea.|i have two dogs.")
    agent.observe(Message({"text": "hello!", "episode_done": False}))
    assert agent.history.persona == ["i love tea.", "i have two dogs."]
    random_agent = make_agent(tiny_gpt2_dir, tmp_path, "--persona", "random")
    random_agent.observe(Message({"text": "hello!", "episode_done": False}))
    assert len(random_agent.history.persona) >= 3


def test_random_chat_persona_changes_each_chat_even_for_a_seeded_training_run(tiny_gpt2_dir, tmp_path):
    def persona():  # opt["seed"] as train_model --seed 0 leaves it in the model's .opt
        parser = ParlaiParser(True, True)
        opt = parser.parse_args(["-m", "transfertransfo", "--model-name", tiny_gpt2_dir,
                                 "--datapath", str(tmp_path), "--persona", "random"])
        opt["seed"] = 0
        agent = create_agent(opt)
        agent.observe(Message({"text": "hello!", "episode_done": False}))
        return tuple(agent.history.persona)

    assert len({persona() for _ in range(4)}) > 1  # 17878 training personas to draw from


def test_full_context_blocking_blocks_the_dialogue_text_truncate_cuts_from_the_model(tiny_gpt2_dir, tmp_path):
    """--beam-context-block-ngram with ParlAI's default --beam-block-full-context true
    blocks against the whole dialogue, even the part --text-truncate keeps from the model.

    The reply R the model gives unblocked is planted as the bot's earlier utterance, where
    --text-truncate 16 hides it: the model sees the same tokens and, unblocked, says R
    again. Blocking the full context must refuse R; blocking only the visible context
    (--beam-block-full-context false) has nothing to refuse."""
    partner = "that sounds fun , i like to go hiking with my dog on the weekends ."

    def reply(bot_said, block, full_context="true"):
        torch.manual_seed(0)  # the same new special-token rows in every agent
        agent = make_agent(tiny_gpt2_dir, tmp_path, "--inference", "beam", "--beam-size", 3,
                           "--beam-min-length", 10, "--text-truncate", 16,
                           "--beam-context-block-ngram", block, "--beam-block-full-context", full_context)
        text = "\n".join([first_example()["text"], bot_said, partner])
        agent.observe(Message({"text": text, "episode_done": False}))
        seen, dialogue = agent.observation["text_vec"].tolist(), agent.history.get_history_vec()
        blocked_against = agent._get_batch_context(agent.batchify([agent.observation]))[0].tolist()
        return agent.act()["text"], seen, dialogue, blocked_against

    def trigrams(ids):
        return {tuple(ids[i : i + 3]) for i in range(len(ids) - 2)}

    encode = make_agent(tiny_gpt2_dir, tmp_path).dict.txt2vec
    unblocked, seen, _, _ = reply("i am fine thanks .", -1)
    assert encode(partner) == seen[2:]  # <bos> <speaker2> partner: the persona and history are cut
    assert not trigrams(encode(unblocked)) & trigrams(seen)  # R repeats nothing the model sees

    again, seen_again, dialogue, _ = reply(unblocked, -1)
    assert seen_again == seen and again == unblocked  # the planted R is hidden from the model
    assert trigrams(encode(again)) & trigrams(dialogue)  # unblocked, it repeats the dialogue

    blocked, _, _, blocked_against = reply(unblocked, 3)
    assert blocked_against == dialogue
    assert len(encode(blocked)) >= 10 and not trigrams(encode(blocked)) & trigrams(dialogue)

    visible_only, _, _, blocked_against = reply(unblocked, 3, full_context="false")
    assert blocked_against == seen and visible_only == unblocked


@pytest.mark.parametrize(
    "inference", [["greedy"], ["beam", "--beam-size", 3], ["topk", "--topk", 5],
                  ["nucleus", "--topp", 0.9], ["delayedbeam", "--beam-size", 2, "--topk", 5]]
)
def test_every_parlai_inference_mode_generates_no_special_token(inference, tiny_gpt2_dir, tmp_path):
    """The generated ids, before they become text (vec2txt would drop special tokens
    anyway), hold no special token but the final `<eos>`, even from a model that prefers
    them: the recipe's control tokens and GPT-2's <|endoftext|> get +30 on every logit."""
    agent = make_agent(tiny_gpt2_dir, tmp_path, "--inference", *inference, "--beam-min-length", 3)
    banned = agent.dict.never_generated_ids()
    assert set(banned) >= {agent.special.bos, agent.special.speaker1, agent.special.speaker2,
                           agent.special.pad, agent.dict.hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")}
    heads = agent.model.double_heads
    lm_logits = heads._lm_logits
    bias = torch.zeros(len(agent.dict))
    bias[banned] = 30.0
    heads._lm_logits = lambda hidden: lm_logits(hidden) + bias
    generated, v2t = [], agent._v2t
    agent._v2t = lambda vec: generated.append(vec.tolist()) or v2t(vec)  # every hypothesis
    agent.observe(first_example())
    reply = agent.act()
    assert generated
    for ids in generated:  # ParlAI's start token, the reply, then <eos> if it ended
        assert ids[0] == agent.START_IDX
        reply_ids = ids[1:-1] if ids[-1] == agent.special.eos else ids[1:]
        assert 3 <= len(reply_ids) <= 20  # --beam-min-length holds <eos> back
        assert not set(reply_ids) & set(banned + [agent.special.eos]), ids
    assert reply["text"].strip()
