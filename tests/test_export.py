"""`parlai export_transfertransfo`: a fine-tuned model file back to a save_pretrained folder
that transformers loads alone, and that fine-tunes further as `--model-name`.

Tiny random GPT-2 and Llama backbones are fine-tuned for two epochs on two real ConvAI2
dialogs through the real CLI, exported, and compared logit for logit.
"""
import json
import os
import subprocess
import sys
from dataclasses import astuple

import pytest
import torch

from benchmarks.kill_resume import first_dialogs

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")


def parlai(*args, timeout=600):
    proc = subprocess.run([PARLAI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return proc


def train(model_name, dialogs, out):
    proc = parlai(
        "train_model", "-m", "transfertransfo", "--model-name", model_name,
        "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 0,
        "-mf", out / "model", "--datapath", out / "data", "-bs", 4, "--num-epochs", 2,
        "-lr", 1e-3, "--skip-generation", "true", "--validation-every-n-epochs", -1,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return str(out / "model")


@pytest.fixture(scope="module")
def two_dialogs(tmp_path_factory):
    return first_dialogs(2, tmp_path_factory.mktemp("convai2") / "two.txt")


@pytest.fixture(scope="module")
def gpt2_model(tiny_gpt2_dir, two_dialogs, tmp_path_factory):
    return train(tiny_gpt2_dir, two_dialogs, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama_model(tiny_llama_dir, two_dialogs, tmp_path_factory):
    return train(tiny_llama_dir, two_dialogs, tmp_path_factory.mktemp("llama"))


def agent_double_heads(model_file):
    from parlai.core.agents import create_agent_from_model_file

    agent = create_agent_from_model_file(model_file, {"no_cuda": True})
    return agent.model.double_heads.eval(), agent.dict


def recipe_input(dictionary):
    """One context with two candidate replies, as the recipe builds them: [1, 2, T]."""
    from parlai_transfertransfo.recipe import segments

    persona = [dictionary.txt2vec("i like to ski.")]
    history = [dictionary.txt2vec("hi! do you ski?")]
    rows = [segments.build_instance(persona, history, dictionary.txt2vec(reply), dictionary.special)
            for reply in ("yes, every winter.", "i have two dogs.")]
    width = max(len(r["input_ids"]) for r in rows)
    pad = dictionary.special.pad
    ids = torch.tensor([[r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows]])
    types = torch.tensor([[r["token_type_ids"] + [pad] * (width - len(r["token_type_ids"])) for r in rows]])
    mc_index = torch.tensor([[r["mc_token_ids"] for r in rows]])
    return ids, types, mc_index


def test_export_writes_a_save_pretrained_folder(gpt2_model, tmp_path):
    proc = parlai("export_transfertransfo", "-mf", gpt2_model, "--out", tmp_path / "export")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    names = set(os.listdir(tmp_path / "export"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "mc_head.safetensors" not in names  # GPT-2's MC head is inside the model
    with open(tmp_path / "export" / "config.json") as f:
        assert json.load(f)["architectures"] == ["GPT2DoubleHeadsModel"]


def test_gpt2_export_loads_in_transformers_with_the_fine_tuned_heads(gpt2_model, tmp_path):
    from transformers import AutoTokenizer, GPT2DoubleHeadsModel

    from parlai_transfertransfo.weights.model_files import export_pretrained

    export_pretrained(gpt2_model, str(tmp_path / "export"))
    exported = GPT2DoubleHeadsModel.from_pretrained(tmp_path / "export").eval()
    double_heads, dictionary = agent_double_heads(gpt2_model)
    ids, types, mc_index = recipe_input(dictionary)
    with torch.no_grad():
        want_lm, want_mc = double_heads(ids, types, mc_index)
        got = exported(input_ids=ids, token_type_ids=types, mc_token_ids=mc_index)
    torch.testing.assert_close(got.logits, want_lm, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.mc_logits, want_mc, rtol=0, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    special = ["<bos>", "<eos>", "<speaker1>", "<speaker2>", "<pad>"]
    assert tuple(tokenizer.convert_tokens_to_ids(special)) == astuple(dictionary.special)
    assert len(tokenizer) == exported.config.vocab_size


def test_llama_export_loads_as_a_causal_lm_with_the_mc_head_beside_it(llama_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from parlai_transfertransfo.weights.model_files import export_pretrained

    files = export_pretrained(llama_model, str(tmp_path / "export"))
    assert "mc_head.safetensors" in files
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    head = load_file(tmp_path / "export" / "mc_head.safetensors")
    double_heads, dictionary = agent_double_heads(llama_model)
    ids, types, mc_index = recipe_input(dictionary)
    flat_ids, flat_types = ids[0], types[0]
    with torch.no_grad():
        want_lm, want_mc = double_heads(ids, types, mc_index)
        embeds = lm.get_input_embeddings()(flat_ids) + lm.get_input_embeddings()(flat_types)
        hidden = lm.model(inputs_embeds=embeds).last_hidden_state  # segments added the GPT way
        got_lm = lm.lm_head(hidden)
        last = hidden[torch.arange(2), mc_index[0]]
        got_mc = last @ head["weight"].T + head["bias"]
    torch.testing.assert_close(got_lm[None], want_lm, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_mc[:, 0][None], want_mc, rtol=0, atol=1e-5)


def _assert_same_weights(got, want):
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for name, value in want_state.items():
        assert torch.equal(got_state[name], value), name


def test_gpt2_export_as_model_name_starts_from_the_fine_tuned_double_heads(gpt2_model, tmp_path):
    from parlai_transfertransfo.weights import backbones
    from parlai_transfertransfo.weights.model_files import export_pretrained

    export_pretrained(gpt2_model, str(tmp_path / "export"))
    fine_tuned, _ = agent_double_heads(gpt2_model)
    _assert_same_weights(backbones.load_double_heads(str(tmp_path / "export")), fine_tuned)


def test_llama_export_as_model_name_starts_from_the_fine_tuned_mc_head(llama_model, tmp_path):
    from parlai_transfertransfo.weights import backbones
    from parlai_transfertransfo.weights.model_files import export_pretrained

    export_pretrained(llama_model, str(tmp_path / "export"))
    fine_tuned, _ = agent_double_heads(llama_model)
    _assert_same_weights(backbones.load_double_heads(str(tmp_path / "export")), fine_tuned)


def test_export_fine_tunes_further_through_the_cli(gpt2_model, two_dialogs, tmp_path):
    from parlai_transfertransfo.weights.model_files import export_pretrained

    export_pretrained(gpt2_model, str(tmp_path / "export"))
    proc = parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tmp_path / "export",
        "-t", "convai2_file", "--convai2-file", two_dialogs, "--valid-split", 0,
        "-mf", tmp_path / "again" / "model", "--datapath", tmp_path / "data", "-bs", 4,
        "--num-epochs", 1, "--skip-generation", "true", "--validation-every-n-epochs", -1,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    again, _ = agent_double_heads(str(tmp_path / "again" / "model"))
    first, _ = agent_double_heads(gpt2_model)
    assert again.vocab_size == first.vocab_size  # the special tokens were already there


def test_exporting_a_missing_model_file_is_one_clear_line(tmp_path):
    proc = parlai("export_transfertransfo", "-mf", tmp_path / "nope" / "model", "--out", tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("transfertransfo: ")
