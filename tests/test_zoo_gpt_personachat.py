"""`zoo:transfertransfo/gpt_personachat/model`, offline, on a tiny archive of the release's
layout: a transformers 2.x OpenAIGPTDoubleHeadsModel folder (config.json with `n_special`,
`pytorch_model.bin` in the legacy pickle format with its `attn.bias` mask buffers and a
stored copy of the tied `lm_head.weight`, OpenAI GPT's `</w>` BPE files, and the five special
tokens appended after the BPE vocabulary) packed flat, as transfer-learning-conv-ai's
`download_pretrained_model()` extracts it.
"""
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import torch

from conftest import TEST_DATA

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
CONVAI2_800 = os.path.join(TEST_DATA, "convai2", "valid_self_original_800.txt")
SPECIAL = ["<bos>", "<eos>", "<speaker1>", "<speaker2>", "<pad>"]
PERSONA = ["i like to ski.", "my wife does not like me anymore."]
ENTRY = "zoo:transfertransfo/gpt_personachat/model"


def _tiny_bpe(folder):
    """vocab.json + merges.txt in OpenAI GPT's format, learnt from ConvAI2 lines."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    with open(CONVAI2_800) as f:
        lines = [line.split(" ", 1)[1] for line in f.read().splitlines()[:400]]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=300, end_of_word_suffix="</w>", show_progress=False,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'"),
    )
    bpe.train_from_iterator(lines, trainer)
    bpe.model.save(str(folder))
    with open(folder / "vocab.json") as f:
        return len(json.load(f))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(archive path, the original model as transformers builds it, n_bpe)."""
    from transformers import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel

    folder = tmp_path_factory.mktemp("gpt_personachat_cache")
    n_bpe = _tiny_bpe(folder)
    with open(folder / "added_tokens.json", "w") as f:
        json.dump({tok: n_bpe + i for i, tok in enumerate(SPECIAL)}, f)
    with open(folder / "special_tokens_map.json", "w") as f:
        json.dump({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                   "additional_special_tokens": ["<speaker1>", "<speaker2>"]}, f)
    n_ctx = 512  # as the release (a smaller one trips the OpenAI GPT padding bug, see report)
    with open(folder / "config.json", "w") as f:  # as transformers 2.x wrote it
        json.dump({
            "afn": "gelu", "attn_pdrop": 0.1, "embd_pdrop": 0.1, "finetuning_task": None,
            "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "n_ctx": n_ctx,
            "n_embd": 32, "n_head": 2, "n_layer": 2, "n_positions": n_ctx, "n_special": 5,
            "num_labels": 1, "output_attentions": False, "output_hidden_states": False,
            "predict_special_tokens": True, "resid_pdrop": 0.1, "summary_activation": None,
            "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
            "summary_type": "cls_index", "summary_use_proj": True, "torchscript": False,
            "vocab_size": n_bpe + 5,
        }, f)
    torch.manual_seed(0)
    config = OpenAIGPTConfig(vocab_size=n_bpe + 5, n_positions=n_ctx, n_embd=32, n_layer=2, n_head=2)
    original = OpenAIGPTDoubleHeadsModel(config).eval()
    with torch.no_grad():  # a fine-tuned MC head is not zero-initialised
        original.multiple_choice_head.summary.weight.normal_(0, 1.0)
        original.multiple_choice_head.summary.bias.fill_(0.25)
    state = {k: v.clone() for k, v in original.state_dict().items()}  # lm_head.weight included
    for layer in range(config.n_layer):  # 2.x stored the causal mask
        state[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    archive = folder.parent / "gpt_personachat_cache.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(folder / name, arcname=name)
    return str(archive), original, n_bpe


def parlai(*args, env=None, stdin=None, timeout=600):
    proc = subprocess.run(
        [PARLAI, *map(str, args)], input=stdin, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
    return proc


@pytest.fixture(scope="module")
def zoo_datapath(release, tmp_path_factory):
    """A datapath where `download()` has built the entry from the tiny archive."""
    from parlai.zoo.transfertransfo import gpt_personachat

    datapath = tmp_path_factory.mktemp("data")
    mp = pytest.MonkeyPatch()
    mp.setenv(gpt_personachat.SOURCE_ENV, release[0])
    try:
        gpt_personachat.download(str(datapath))
    finally:
        mp.undo()
    return str(datapath)


def _agent(model_file, **overrides):
    from parlai.core.agents import create_agent_from_model_file

    agent = create_agent_from_model_file(model_file, {"no_cuda": True, **overrides})
    agent.model.eval()  # ParlAI switches modes per step; compare without dropout
    return agent


def test_download_builds_a_parlai_model_file_and_marks_it_built(zoo_datapath):
    folder = os.path.join(zoo_datapath, "models", "transfertransfo", "gpt_personachat")
    names = set(os.listdir(folder))
    assert {"model", "model.opt", "model.dict", "model.dict.hf", "model.hf_config.json", ".built"} <= names
    assert "gpt_personachat_cache.tar.gz" not in names
    with open(os.path.join(folder, "model.opt")) as f:
        opt = json.load(f)
    assert opt["model"] == "transfertransfo" and opt["model_name"] == "openai-gpt"
    with open(os.path.join(folder, "model.hf_config.json")) as f:
        assert json.load(f)["model_type"] == "openai-gpt"


def test_special_tokens_keep_the_ids_the_checkpoint_was_trained_with(zoo_datapath, release):
    _, _, n_bpe = release
    agent = _agent(os.path.join(zoo_datapath, "models", "transfertransfo", "gpt_personachat", "model"))
    special = agent.dict.special
    assert (special.bos, special.eos, special.speaker1, special.speaker2, special.pad) == tuple(
        range(n_bpe, n_bpe + 5)
    )
    assert len(agent.dict) == n_bpe + 5  # no token added, no embedding grown
    tokens = agent.dict.hf_tokenizer.convert_ids_to_tokens(agent.dict.txt2vec("Hello there, I like to ski!"))
    # OpenAI GPT's BPE: lower-cased, punctuation split off, `</w>` ends a word
    assert tokens == ["hello</w>", "there</w>", ",</w>", "i</w>", "like</w>", "to</w>", "s", "k", "i</w>", "!</w>"]
    assert agent.dict.txt2vec("<speaker1> ~") == agent.dict.txt2vec("< speaker1 >")  # typed, not special; `~` is unknown


def test_converted_model_has_the_original_weights_and_logits(zoo_datapath, release):
    _, original, n_bpe = release
    agent = _agent(os.path.join(zoo_datapath, "models", "transfertransfo", "gpt_personachat", "model"))
    converted = agent.model.double_heads.lm
    for name, value in original.state_dict().items():
        assert torch.equal(converted.state_dict()[name], value), name
    ids = torch.tensor([[[n_bpe, 10, 20, 30, n_bpe + 2, 40, 50, n_bpe + 1],
                         [n_bpe, 10, 20, 30, n_bpe + 2, 60, 70, n_bpe + 1]]])
    types = torch.full_like(ids, n_bpe + 2)
    mc_index = torch.tensor([[7, 7]])
    with torch.no_grad():
        want = original(input_ids=ids, token_type_ids=types, mc_token_ids=mc_index)
        lm_logits, mc_logits = agent.model.double_heads(ids, types, mc_index)
    torch.testing.assert_close(lm_logits, want.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(mc_logits, want.mc_logits, rtol=0, atol=1e-6)


def _original_greedy_reply(original, tokenizer, persona, utterance, special, max_len=20):
    """What the original checkpoint says, decoded greedily by hand: the recipe's input
    `<bos> persona <speaker2> utterance <speaker1>`, special tokens banned, `<eos>` banned
    for the first token (ParlAI's --beam-min-length 1)."""
    bos, eos, sp1, sp2, pad = special
    persona_ids = [i for s in persona for i in tokenizer.encode(s, add_special_tokens=False)]
    ids = [bos] + persona_ids + [sp2] + tokenizer.encode(utterance, add_special_tokens=False) + [sp1]
    types = [sp1] * (1 + len(persona_ids)) + [sp2] * (len(ids) - 1 - len(persona_ids) - 1) + [sp1]
    reply = []
    for step in range(max_len):
        with torch.no_grad():
            logits = original(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits[0, -1]
        logits[[bos, sp1, sp2, pad]] = -float("inf")
        if step == 0:
            logits[eos] = -float("inf")
        token = int(logits.argmax())
        if token == eos:
            break
        reply.append(token)
        ids, types = ids + [token], types + [sp1]
    return tokenizer.decode(reply, skip_special_tokens=True)


def test_interactive_says_what_the_original_checkpoint_says(zoo_datapath, release):
    from transformers import AutoTokenizer

    _, original, n_bpe = release
    model_dir = os.path.join(zoo_datapath, "models", "transfertransfo", "gpt_personachat")
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(model_dir, "model.dict.hf"))
    utterance = "hi! do you like to ski?"
    want = _original_greedy_reply(original, tokenizer, PERSONA, utterance, range(n_bpe, n_bpe + 5))
    proc = parlai(
        "interactive", "-mf", ENTRY, "--datapath", zoo_datapath, "--inference", "greedy",
        "--persona", "|".join(PERSONA), stdin=utterance + "\n", timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    replies = re.findall(r"\[Transfertransfo\]: (.*)", proc.stdout + proc.stderr)
    assert replies == [want]


def test_eval_model_on_the_zoo_entry_scores_like_the_original_checkpoint(zoo_datapath, release):
    """eval_model's hits@1 and ppl on the converted entry are those of the release's own
    transformers model, put in the agent's place and evaluated here on the same examples
    (one at a time: batches would take the first example of 4 dialogs instead)."""
    from eval_helpers import evaluate
    from parlai_transfertransfo.recipe.double_heads import DoubleHeads

    task = ["-t", "convai2_file", "--convai2-file", CONVAI2_800, "--valid-split", 0, "--datapath", zoo_datapath]
    proc = parlai("eval_model", "-mf", ENTRY, *task, "--num-examples", 8, "-bs", 1, "--skip-generation", "true")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    final = [json.loads(l) for l in (proc.stdout + proc.stderr).splitlines() if l.startswith("{")][-1]
    model_file = os.path.join(zoo_datapath, "models", "transfertransfo", "gpt_personachat", "model")
    agent = _agent(model_file, datapath=zoo_datapath, skip_generation=True)
    agent.model.double_heads = DoubleHeads(release[1]).eval()
    want = evaluate(agent, *task, "-dt", "valid", num_examples=8)
    assert final["exs"] == 8
    for metric in ("hits@1", "hits@5", "hits@10"):  # this tiny release ranks by its MC head
        assert final[metric] == pytest.approx(want[metric], abs=1e-4), metric  # reports: 4 digits
    assert final["ppl"] == pytest.approx(want["ppl"], rel=6e-4)


def test_archive_extracted_to_a_folder_converts_too(release, tmp_path):
    from parlai_transfertransfo.weights.convert import convert_personachat_checkpoint

    archive, original, _ = release
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    convert_personachat_checkpoint(str(tmp_path / "extracted"), str(tmp_path / "m" / "model"))
    agent = _agent(str(tmp_path / "m" / "model"))
    weight = agent.model.double_heads.lm.transformer.tokens_embed.weight
    assert torch.equal(weight, original.transformer.tokens_embed.weight)


def test_offline_without_an_archive_is_one_clear_line(tmp_path):
    proc = parlai(
        "interactive", "-mf", ENTRY, "--datapath", tmp_path,
        env={"TRANSFERTRANSFO_GPT_PERSONACHAT": "http://127.0.0.1:9/gpt_personachat_cache.tar.gz"},
        stdin="hi\n", timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("transfertransfo: cannot download http://127.0.0.1:9/gpt_personachat_cache.tar.gz")
    assert "TRANSFERTRANSFO_GPT_PERSONACHAT=" in last
    assert not os.path.exists(tmp_path / "models" / "transfertransfo" / "gpt_personachat")


def test_a_corrupt_archive_is_one_clear_line(tmp_path):
    bad = tmp_path / "gpt_personachat_cache.tar.gz"
    bad.write_bytes(b"<Error><Code>AccessDenied</Code></Error>")
    proc = parlai("interactive", "-mf", ENTRY, "--datapath", tmp_path / "data",
                  env={"TRANSFERTRANSFO_GPT_PERSONACHAT": str(bad)}, stdin="hi\n", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"transfertransfo: cannot extract '{bad}'")


def test_the_converted_model_exports_back_to_an_openai_gpt_folder(zoo_datapath, release, tmp_path):
    from transformers import AutoTokenizer, OpenAIGPTDoubleHeadsModel

    from parlai_transfertransfo.weights.model_files import export_pretrained

    _, original, n_bpe = release
    model_file = os.path.join(zoo_datapath, "models", "transfertransfo", "gpt_personachat", "model")
    export_pretrained(model_file, str(tmp_path / "export"))
    exported = OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "export").eval()
    for name, value in original.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value), name
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert tokenizer.convert_tokens_to_ids(SPECIAL) == list(range(n_bpe, n_bpe + 5))
