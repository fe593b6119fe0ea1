"""`parlai self_chat -t convai2` end to end: offline personas, openings, partners, batches, logs.

Two different tiny transfertransfo model files (a GPT-2 and a Llama backbone, each made by a
one-step `parlai train_model` run) talk to each other through the real command line; the
log is read back with ParlAI's own Conversations loader, and replayed turn by turn with
each model on its own to prove who said what, from which persona.
"""
import json
import os
import re
import subprocess
import sys

import pytest
from parlai.core.agents import create_agent_from_model_file
from parlai.core.message import Message
from parlai.utils.conversations import Conversations

from conftest import TEST_DATA
from parlai_transfertransfo.data.personas import load_personas, persona_text

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")
PACKAGED = {persona_text(p) for p in load_personas()}


def parlai(*args, timeout=300):
    proc = subprocess.run([PARLAI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def first_dialog(path):
    """The first real ConvAI2 validation dialog (7 examples), as a training file."""
    lines = []
    with open(CONVAI2_800) as f:
        for line in f:
            if line.startswith("1 ") and lines:
                break
            lines.append(line)
    path.write_text("".join(lines))
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2_dir, tiny_llama_dir):
    """Two transfertransfo model files from one training step each, trained side by side."""
    root = tmp_path_factory.mktemp("selfchat_models")
    data = first_dialog(root / "one.txt")
    procs = {}
    for name, backbone in (("gpt2", tiny_gpt2_dir), ("llama", tiny_llama_dir)):
        procs[name] = subprocess.Popen(
            [PARLAI, "train_model", "-m", "transfertransfo", "--model-name", backbone,
             "-t", "convai2_file", "--convai2-file", data, "--valid-split", "0",
             "-mf", str(root / name / "model"), "--datapath", str(root / "data"), "-bs", "8",
             "--num-epochs", "1", "--skip-generation", "true", "--validation-every-n-epochs", "-1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    return str(root / "gpt2" / "model"), str(root / "llama" / "model"), str(root / "data")


@pytest.fixture(scope="module")
def duel(models, tmp_path_factory):
    """GPT-2 against Llama: 3 chats of 3 turns (personas, then 2 exchanges) 2 at a time,
    greedy on both sides (the partner's decoding from --partner-opt-file)."""
    gpt2, llama, data = models
    root = tmp_path_factory.mktemp("duel")
    (root / "partner.json").write_text(json.dumps({"inference": "greedy"}))
    rc, out = parlai(
        "self_chat", "-mf", gpt2, "--partner-model-file", llama, "--partner-opt-file",
        root / "partner.json", "-t", "convai2", "--num-self-chats", 3, "--selfchat-max-turns", 3,
        "-bs", 2, "--inference", "greedy", "--datapath", data, "--outfile", root / "duel",
    )
    assert rc == 0, out[-3000:]
    return root / "duel.jsonl", out


def test_personas_come_from_the_packaged_training_personas_offline(duel):
    log, out = duel
    assert f"using the {len(PACKAGED)} distinct packaged PERSONA-CHAT training personas" in out
    chats = list(Conversations(str(log)))
    for chat in chats:
        sides = [turn["text"] for turn in chat.context]
        assert [turn["id"] for turn in chat.context] == ["context", "context"]
        assert set(sides) <= PACKAGED
    # each side draws its own persona (the same one twice: 1 in 17878 per chat)
    assert any(chat.context[0]["text"] != chat.context[1]["text"] for chat in chats)


def test_the_log_is_n_conversations_of_the_requested_length_in_acute_evals_format(duel):
    log, out = duel
    chats = Conversations(str(log))
    assert len(chats) == 3
    assert chats.metadata.self_chat is True
    assert chats.metadata.speakers == ["Transfertransfo_1", "Transfertransfo_2"]
    for line in log.read_text().splitlines():  # what fast_acute reads: dialog pairs of id + text
        dialog = json.loads(line)["dialog"]
        assert len(dialog) == 2  # --selfchat-max-turns 3: the personas, then 2 exchanges
        for pair in dialog:
            assert [act["id"] for act in pair] == ["Transfertransfo_1", "Transfertransfo_2"]
            assert all(isinstance(act["text"], str) and act["text"].strip() for act in pair)
    for chat in chats:
        assert chat[0]["id"] == "Transfertransfo_1" and chat[0]["text"].strip()  # the opening
    # -bs 2: the first two chats ran together, then the third alone; each is printed whole
    assert re.findall(r"\((\d) / 3\)", out) == ["2", "3"]
    printed = out.split("-- end of episode --")
    assert len(printed) == 4
    for chat, shown in zip(chats, printed):
        assert all(f"[{turn['id']}]: {turn['text']}" in shown for turn in chat)


class Replay:
    """A model on its own, greedy: what it says with a persona, hearing some turns."""

    def __init__(self, model_file, data):
        self.agent = create_agent_from_model_file(
            model_file, {"interactive_mode": True, "inference": "greedy", "datapath": data}
        )

    def says(self, persona, heard):
        """Its reply to each of `heard` in turn (None: it speaks first)."""
        self.agent.reset()
        self.agent.observe(Message({"text": persona, "episode_done": False}))
        said = []
        for text in heard:
            if text is not None:
                self.agent.observe(Message({"text": text, "episode_done": False}))
            said.append(self.agent.act()["text"])
        return said


def test_each_side_speaks_from_its_own_model_and_persona_and_the_first_opens(models, duel):
    """Replaying every chat with each model alone reproduces its every turn: the GPT-2 model
    opened from its persona alone, the Llama partner answered from the other persona."""
    gpt2, llama, data = models
    first_model, partner = Replay(gpt2, data), Replay(llama, data)
    for chat in Conversations(str(duel[0])):
        first = [chat[i]["text"] for i in range(0, len(chat), 2)]
        second = [chat[i]["text"] for i in range(1, len(chat), 2)]
        assert first_model.says(chat.context[0]["text"], [None] + second[:-1]) == first
        assert partner.says(chat.context[1]["text"], first) == second


@pytest.mark.parametrize("decoding", [["--inference", "greedy"], ["--inference", "beam", "--beam-size", 2,
                                                                  "--beam-context-block-ngram", 2]])
def test_the_bot_opens_from_its_persona_alone_with_the_recipes_inputs(decoding, tiny_gpt2_dir, tmp_path):
    """A persona with no utterance yet is the recipe's instance with an empty history:
    `<bos>` + persona, then the reply (`<speaker1>`, token type `<speaker2>`)."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    from parlai_transfertransfo.recipe import segments

    opt = ParlaiParser(True, True).parse_args([
        "-m", "transfertransfo", "--model-name", tiny_gpt2_dir, "--datapath", str(tmp_path),
        "--skip-generation", "false", *map(str, decoding),
    ])
    agent = create_agent(opt)
    persona = ["i like to remodel homes .", "i like to go hunting ."]
    obs = agent.observe(Message({"text": persona_text(persona), "episode_done": False}))
    reply = [7, 8]
    instance = segments.build_instance([agent.dict.txt2vec(s) for s in persona], [], reply, agent.special)
    prefix = len(instance["input_ids"]) - len(reply) - 2  # before <speaker1> reply <eos>
    assert obs["text_vec"].tolist() == instance["input_ids"][:prefix]
    assert obs["text_types"].tolist() == instance["token_type_ids"][:prefix]
    assert obs["reply_type"] == instance["token_type_ids"][-1] == agent.special.speaker2
    opening = agent.act()
    assert opening["text"].strip()
    assert agent.history.utterances == [opening["text"]]  # and it is the bot's first turn


def self_chat_in_process(*args):
    """ParlAI's `self_chat` script, run here (its ParlaiScript entry point, as the CLI does)."""
    from parlai.scripts.self_chat import SelfChat

    return SelfChat.main(*map(str, args))


@pytest.mark.parametrize("batchsize, expected", [(1, [1] * 16), (3, [3, 3, 3, 3, 1, 1, 1, 1])])
def test_each_turn_generates_for_a_whole_batch_of_chats_in_one_model_call(
    batchsize, expected, models, tmp_path, monkeypatch
):
    """4 chats of 3 turns, -bs 3: each speaker generates once per turn for the first three
    chats together, then for the fourth alone (with -bs 1: once per chat and turn)."""
    from parlai_transfertransfo.agent.transfertransfo import TransfertransfoAgent

    gpt2, _, data = models
    generate, sizes = TransfertransfoAgent._generate, []

    def counting_generate(self, batch, *args, **kwargs):
        sizes.append(batch.text_vec.size(0))
        return generate(self, batch, *args, **kwargs)

    monkeypatch.setattr(TransfertransfoAgent, "_generate", counting_generate)
    logs = self_chat_in_process(
        "-mf", gpt2, "-t", "convai2", "--num-self-chats", 4, "--selfchat-max-turns", 3,
        "-bs", batchsize, "--datapath", data, "--outfile", tmp_path / "log", "-d", "false",
        "--inference", "greedy",  # ParlAI's nucleus sampling sorts the vocabulary, row by row
    )
    assert sizes == expected
    chats = list(Conversations(str(tmp_path / "log.jsonl")))
    assert len(chats) == 4 and len([e for e in logs if e]) == 4
    assert all(len(chat) == 4 and all(turn["text"].strip() for turn in chat) for chat in chats)


def one_line_error(output):
    assert "Traceback" not in output
    return output.strip().splitlines()[-1]


def test_a_missing_partner_model_is_one_line_on_the_command_line(models, tmp_path):
    gpt2, _, data = models
    rc, out = parlai("self_chat", "-mf", gpt2, "--partner-model-file", tmp_path / "other", "-t", "convai2",
                     "--datapath", data)
    assert rc == 1
    assert one_line_error(out) == (
        f"parlai self_chat: the partner model file {tmp_path}/other does not exist (no "
        f"{tmp_path}/other.opt): check --partner-model-file"
    )


@pytest.mark.parametrize("args, message", [
    (["-mf", "/nonexistent/model"], "the model file /nonexistent/model does not exist: check -mf/--model-file"),
    (["-bs", 0], "-bs must be at least 1 (got 0)"),
    (["--num-self-chats", -2], "--num-self-chats must be at least 1 (got -2)"),
    (["--selfchat-max-turns", 0], "--selfchat-max-turns must be at least 1 (got 0)"),
    (["--partner-opt-file", "/nonexistent.json"], "--partner-opt-file /nonexistent.json does not exist"),
    (["--partner-model-file", "zoo:transfertransfo/nope/model"],
     "--partner-model-file zoo:transfertransfo/nope/model: no such zoo model"),
])
def test_nonsense_options_stop_before_any_model_loads(args, message, models, monkeypatch):
    from parlai_transfertransfo.agent.transfertransfo import TransfertransfoAgent

    monkeypatch.setattr(TransfertransfoAgent, "__init__", lambda *a, **k: pytest.fail("a model loaded"))
    gpt2, _, data = models
    with pytest.raises(SystemExit) as err:
        self_chat_in_process("-mf", gpt2, "-t", "convai2", "--datapath", data, *args)
    assert str(err.value).startswith(f"parlai self_chat: {message}")
    assert "\n" not in str(err.value)


# ---- the compat patches (plugin/compat/self_chat.py, convai2_worlds.py): each breakage is real -------------
def both_file_dialogs():
    """Three `convai2:both` dialogs (ParlAI's text format): each side's persona, one exchange."""
    lines = []
    for i, (mine, theirs) in enumerate([("i like cats.", "i like dogs."), ("i am a nurse.", "i fly planes."),
                                        ("i love tea.", "i hate tea.")]):
        lines += [f"1 your persona: {mine}", f"2 partner's persona: {theirs}",
                  f"3 hello {i}\thi {i}\t\tnope|hi {i}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def convai2_install(tmp_path):
    """A datapath whose ConvAI2 folder is installed (marked built) without the `both` files."""
    import parlai.core.build_data as build_data

    from parlai_transfertransfo.data.convai2 import FOLDER, VERSION

    (tmp_path / FOLDER).mkdir()
    build_data.mark_done(str(tmp_path / FOLDER), VERSION)
    return tmp_path


def test_parlai_reads_self_chat_personas_from_convai2s_training_file_only(convai2_install):
    import inspect

    import parlai.tasks.convai2.worlds as worlds
    from parlai.core.params import ParlaiParser

    opt = ParlaiParser(True, False).parse_args(["--datapath", str(convai2_install), "-t", "convai2"])
    parlai_load = inspect.getclosurevars(worlds._load_personas).nonlocals["parlai_load_personas"]
    with pytest.raises(SystemExit, match="train_both_original.txt is not installed"):
        parlai_load(opt)  # the breakage: no training file, no self-chat
    assert sorted(worlds._load_personas(opt)) == sorted(PACKAGED)
    # with the file installed, the personas are those ParlAI reads from it
    (convai2_install / "ConvAI2" / "train_both_original.txt").write_text(both_file_dialogs())
    from_file = worlds._load_personas(opt)
    assert "your persona: i am a nurse." in from_file and "your persona: i fly planes." in from_file
    assert sorted(from_file) == sorted(parlai_load(opt))


def parlai_self_chat_script():
    """ParlAI's own `parlai/scripts/self_chat.py`, loaded afresh under another name (unpatched)."""
    import importlib.util

    import parlai.scripts.self_chat as patched

    spec = importlib.util.spec_from_file_location("parlai_self_chat_unpatched", patched.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parlai_self_chat_refuses_batches_and_breaks_on_a_missing_partner(models, tmp_path):
    import parlai.scripts.self_chat as patched

    assert patched.self_chat.__module__ == "parlai_transfertransfo.selfchat.script"
    parlai_script = parlai_self_chat_script()
    gpt2, _, data = models
    common = ["-mf", gpt2, "-t", "convai2", "--datapath", data, "-d", "false", "--outfile", tmp_path / "log"]
    opt = parlai_script.setup_args().parse_args(list(map(str, common + ["-bs", 2])))
    with pytest.raises(AssertionError, match="Batch size cannot be different than 1"):
        parlai_script.self_chat(opt)
    opt = parlai_script.setup_args().parse_args(list(map(str, common + ["-pmf", tmp_path / "missing"])))
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
        parlai_script.self_chat(opt)
