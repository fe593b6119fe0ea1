"""LoRA through peft over a tiny random Llama: transparent at init, only the intended
tensors train, merging changes nothing, the adapter folder loads with
`PeftModel.from_pretrained`, files of the hand-written LoRA that peft replaced still load,
and a CLI-trained model (--lora-rank) extracts to an adapter that rebuilds a model with the
very same scores."""
import os
import subprocess
import sys

import pytest
import torch

from parlai_transfertransfo.weights import backbones, lora, model_files
from parlai_transfertransfo.errors import TransfertransfoError

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
NEW_IDS = [50257, 50258, 50260, 50261, 50259]  # <bos> <eos> <speaker1> <speaker2> <pad>, as added
LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "legacy_lora")


def tiny_double_heads(path):
    torch.manual_seed(0)
    double_heads = backbones.load_double_heads(path)
    double_heads.resize_token_embeddings(50262)
    return double_heads.eval()


def recipe_batch():
    """Two contexts of two candidates each, the second (gold) one labelled, segments from the
    new tokens: the inputs of `DoubleHeads.recipe_losses`."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50262, (2, 5), generator=g)
    ids[:, 0] = 50257
    cands = torch.randint(0, 50262, (4, 5), generator=g)
    cands[:, 0], cands[:, -1] = 50260, 50258
    return (ids, torch.full_like(ids, 50261), torch.ones_like(ids), torch.tensor([0, 0, 1, 1]),
            cands, torch.full_like(cands, 50260), torch.tensor([5, 5, 5, 5]), torch.tensor([1, 3]))


def outputs(double_heads):
    """Everything the agent reads off the model: training losses, cached-prefix ranking
    scores and next-token logits."""
    batch = recipe_batch()
    ids, types = batch[0], batch[1]
    with torch.no_grad():
        nll, _, mc = double_heads.recipe_losses(*batch)
        prefix = double_heads.encode_prefix(ids, types, torch.ones(2, 5, dtype=torch.long))
        cands = torch.cat([torch.full((2, 1), 50260), ids[:, 1:]], dim=1)
        scores, token_nll = double_heads.score_candidates(
            prefix, torch.tensor([0, 1]), cands, torch.full_like(cands, 50260), torch.tensor([5, 3])
        )
        logits, _, _ = double_heads.extend(prefix, cands[:, :1], cands[:, :1])
    return {"lm_nll": nll, "mc": mc, "rank_mc": scores, "rank_nll": token_nll, "logits": logits}


def legacy_view(outs):
    """The part of `outputs` that tests/data/legacy_lora/tiny_outputs.safetensors keeps."""
    return dict(outs, logits=outs["logits"][..., 50000:])


def assert_same_outputs(a, b, atol):
    for name in a:
        assert (a[name] - b[name]).abs().max() <= atol, (name, (a[name] - b[name]).abs().max())


def train_steps(double_heads, steps=3, lr=1e-2):
    """A few recipe steps with torch's AdamW at its default weight decay (0.01), given the
    trainable parameters only, as ParlAI's --optimizer adamw does."""
    double_heads.train()
    optimizer = torch.optim.AdamW([p for p in double_heads.parameters() if p.requires_grad], lr=lr)
    batch = recipe_batch()
    for _ in range(steps):
        nll, _, mc = double_heads.recipe_losses(*batch)
        loss = nll.mean() + torch.nn.functional.cross_entropy(mc.view(2, 2), torch.tensor([1, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return double_heads.eval()


def test_wrapped_model_computes_exactly_what_the_backbone_did(tiny_llama_dir):
    double_heads = tiny_double_heads(tiny_llama_dir)
    before = outputs(double_heads)
    lora.apply_lora(double_heads, rank=4, alpha=16, new_token_ids=NEW_IDS)
    assert lora.is_lora(double_heads)
    # peft: B = 0, and the trainable rows start as the embedding's own rows
    assert_same_outputs(outputs(double_heads), before, atol=1e-7)
    config = double_heads.peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.trainable_token_indices) == (4, 16, NEW_IDS)
    assert set(config.target_modules) == set(lora.DEFAULT_TARGETS)


def test_only_lora_the_new_rows_and_the_mc_head_train(tiny_llama_dir):
    double_heads = lora.apply_lora(tiny_double_heads(tiny_llama_dir), rank=4, alpha=16, new_token_ids=NEW_IDS)
    trainable = {n for n, p in double_heads.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".lora_A." in n or ".lora_B." in n or "trainable_tokens_delta" in n or n.startswith("mc_head.") for n in trainable
    )
    # rank 4 x (in + out) of q, k, v, o, gate, up, down in 2 layers; 5 new rows of 32 (tied
    # head: the same rows); the MC head
    assert lora.trainable_parameters(double_heads) == 2 * 4 * (64 + 48 + 48 + 64 + 3 * 96) + 5 * 32 + 33
    frozen = {n: p.detach().clone() for n, p in double_heads.named_parameters() if not p.requires_grad}
    rows_before = double_heads.lm.get_input_embeddings()(torch.tensor(NEW_IDS)).detach().clone()
    mc_before = double_heads.mc_head.weight.detach().clone()

    train_steps(double_heads)
    params = dict(double_heads.named_parameters())
    for name, value in frozen.items():  # every backbone weight is bit-identical, embeddings included
        assert torch.equal(params[name], value), name
    assert not torch.equal(double_heads.lm.get_input_embeddings()(torch.tensor(NEW_IDS)), rows_before)
    assert not torch.equal(double_heads.mc_head.weight, mc_before)
    assert double_heads.lm.model.layers[0].self_attn.q_proj.lora_B["default"].weight.abs().sum() > 0

    base_embed = frozen["lm.model.embed_tokens.token_adapter.base_layer.weight"]
    lora.merge_lora(double_heads)  # merged: only the new rows differ from the embedding
    embed = double_heads.lm.get_input_embeddings().weight
    assert torch.equal(embed[:50257], base_embed[:50257])
    assert not torch.equal(embed[50257:], base_embed[50257:])
    assert double_heads.lm.get_output_embeddings().weight is embed  # still tied


def test_merged_model_gives_the_same_outputs_with_plain_modules(tiny_llama_dir):
    double_heads = train_steps(lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, NEW_IDS))
    before = outputs(double_heads)
    lora.merge_lora(double_heads)
    assert_same_outputs(outputs(double_heads), before, atol=1e-5)
    assert not lora.is_lora(double_heads)
    assert all(p.requires_grad for p in double_heads.parameters())
    assert set(double_heads.state_dict()) == set(tiny_double_heads(tiny_llama_dir).state_dict())


def test_adapter_folder_loads_with_peft_as_hugging_face_users_do(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    trained = train_steps(lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 8.0, NEW_IDS))
    special = dict(zip(["<bos>", "<eos>", "<speaker1>", "<speaker2>", "<pad>"], NEW_IDS))
    files = lora.save_adapter(trained, str(tmp_path / "adapter"), backbone=tiny_llama_dir, special_ids=special)
    assert files == ["adapter_config.json", "adapter_model.safetensors", "mc_head.safetensors", "transfertransfo.json"]
    info = lora.read_adapter_info(str(tmp_path / "adapter"))
    assert (info["rank"], info["alpha"], info["vocab_size"], info["new_token_ids"]) == (4, 8.0, 50262, NEW_IDS)
    assert info["special_ids"] == special and info["backbone"] == tiny_llama_dir

    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)  # what a transformers + peft user does
    lm.resize_token_embeddings(50262)
    peft_lm = PeftModel.from_pretrained(lm, str(tmp_path / "adapter")).eval()
    ids = torch.tensor([[50257, 40, 588, 50260, 17, 50258]])
    with torch.no_grad():
        torch.testing.assert_close(peft_lm(input_ids=ids).logits, trained.lm(input_ids=ids).logits, rtol=0, atol=1e-6)
    head = load_file(tmp_path / "adapter" / "mc_head.safetensors")
    assert torch.equal(head["weight"], trained.mc_head.weight.detach())

    fresh = lora.load_adapter(tiny_double_heads(tiny_llama_dir), str(tmp_path / "adapter"))
    assert_same_outputs(outputs(fresh), outputs(trained), atol=0)
    with pytest.raises(TransfertransfoError, match="trained with 50262 tokens, the backbone has 50257"):
        lora.load_adapter(backbones.load_double_heads(tiny_llama_dir), str(tmp_path / "adapter"))
    with pytest.raises(TransfertransfoError, match="not a transfertransfo adapter folder: transfertransfo.json"):
        os.remove(tmp_path / "adapter" / "transfertransfo.json")
        lora.read_adapter_info(str(tmp_path / "adapter"))


def test_an_artifact_of_the_hand_written_lora_converts_to_an_adapter_with_the_same_outputs(tiny_llama_dir, tmp_path):
    """tests/data/legacy_lora: an artifact written by the hand-written LoRA peft replaced, and
    the outputs that code computed from it (see make_legacy.py there)."""
    from safetensors.torch import load_file

    lora.convert_legacy_artifact(os.path.join(LEGACY, "tiny_artifact.safetensors"), str(tmp_path / "adapter"),
                                 backbone=tiny_llama_dir)
    converted = lora.load_adapter(tiny_double_heads(tiny_llama_dir), str(tmp_path / "adapter"))
    assert_same_outputs(legacy_view(outputs(converted)), load_file(os.path.join(LEGACY, "tiny_outputs.safetensors")), atol=1e-6)
    with pytest.raises(TransfertransfoError, match="neither an adapter folder nor a transfertransfo LoRA artifact"):
        lora.convert_legacy_artifact(os.path.join(LEGACY, "tiny_outputs.safetensors"), str(tmp_path / "x"))


def test_gpt2_and_double_wrapping_are_refused_in_one_line(tiny_gpt2_dir, tiny_llama_dir):
    with pytest.raises(TransfertransfoError, match="Llama-family backbones"):
        lora.apply_lora(backbones.load_double_heads(tiny_gpt2_dir), 4, 16, [0])
    double_heads = lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, NEW_IDS)
    with pytest.raises(TransfertransfoError, match="already applied"):
        lora.apply_lora(double_heads, 4, 16, NEW_IDS)
    with pytest.raises(TransfertransfoError, match="no Linear layers named c_attn"):
        lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, NEW_IDS, targets=("q_proj", "c_attn"))
    with pytest.raises(TransfertransfoError, match="not rows of the 50262-token embedding"):
        lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, [50262])


# --- through the command line, with the agent's --lora-rank option ------------------------------
def parlai(*args, timeout=600):
    proc = subprocess.run([PARLAI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def final_report(output):
    import json

    return [json.loads(l) for l in output.splitlines() if l.startswith("{") and l.endswith("}")][-1]


@pytest.fixture(scope="module")
def lora_trained(tmp_path_factory, tiny_llama_dir):
    from benchmarks.kill_resume import first_dialogs

    out = tmp_path_factory.mktemp("lora")
    dialogs = first_dialogs(4, out / "four.txt")
    parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tiny_llama_dir, "--lora-rank", 4,
        "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 0,
        "-mf", out / "model", "--datapath", out / "data", "-bs", 8, "--num-epochs", 3, "-lr", 1e-2,
        "--skip-generation", "true", "--validation-every-n-epochs", -1,
    )
    return str(out / "model"), dialogs, out


def test_cli_lora_model_file_keeps_the_backbone_and_extracts_a_small_adapter(lora_trained, tiny_llama_dir):
    model_file, _, out = lora_trained
    from parlai.utils import pickle as parlai_pickle

    state = torch.load(model_file, map_location="cpu", pickle_module=parlai_pickle)["model"]
    backbone = tiny_double_heads(tiny_llama_dir).state_dict()
    for key, wrapped in (("lm.model.layers.1.mlp.down_proj.weight", "lm.model.layers.1.mlp.down_proj.base_layer.weight"),
                         ("lm.model.norm.weight", "lm.model.norm.weight"),
                         ("lm.model.embed_tokens.weight", "lm.model.embed_tokens.token_adapter.base_layer.weight")):
        # the resized rows are drawn at random on each load; the trainable rows replace them anyway
        assert torch.equal(state["double_heads." + wrapped][:50257], backbone[key][:50257]), key
    assert state["double_heads.lm.model.layers.1.mlp.down_proj.lora_B.default.weight"].abs().sum() > 0

    files = model_files.extract_adapter(model_file, str(out / "adapter"))
    assert files == ["adapter_config.json", "adapter_model.safetensors", "mc_head.safetensors", "transfertransfo.json"]
    info = lora.read_adapter_info(str(out / "adapter"))
    assert (info["rank"], info["alpha"], info["backbone"], info["new_token_ids"]) == (4, 16.0, tiny_llama_dir, NEW_IDS)
    assert os.path.getsize(out / "adapter" / "adapter_model.safetensors") < 200_000


def test_zoo_build_from_the_extracted_adapter_scores_like_the_lora_model(lora_trained, tmp_path):
    from parlai_transfertransfo.weights.model_files import export_pretrained
    from parlai_transfertransfo.zoo.transfertransfo.smollm2_135m import build

    model_file, dialogs, out = lora_trained
    model_files.extract_adapter(model_file, str(tmp_path / "adapter"))
    built = build(str(tmp_path / "zoo_data"), str(tmp_path / "adapter"))
    common = ["-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 0, "-bs", 8,
              "--skip-generation", "true", "--datapath", out / "eval"]
    trained = final_report(parlai("eval_model", "-mf", model_file, *common))
    merged = final_report(parlai("eval_model", "-mf", built, *common))
    assert trained["exs"] == merged["exs"] == 29
    for metric in ("hits@1", "hits@5", "hits@10", "loss", "ppl", "wppl", "token_acc"):
        assert merged[metric] == pytest.approx(trained[metric], rel=1e-4, abs=1e-6), metric
    with pytest.raises(TransfertransfoError, match="was not trained with --lora-rank: export it without --adapter"):
        export_pretrained(built, str(tmp_path / "export"), adapter=True)


def test_a_lora_model_file_exports_merged_with_the_same_outputs(lora_trained, tmp_path):
    """`parlai export_transfertransfo` folds the LoRA deltas in: the exported causal LM + MC
    head compute what the LoRA model file computes."""
    from test_export import agent_double_heads, recipe_input

    model_file, _, _ = lora_trained
    parlai("export_transfertransfo", "-mf", model_file, "--out", tmp_path / "export")
    exported = backbones.load_double_heads(str(tmp_path / "export")).eval()
    with_lora, dictionary = agent_double_heads(model_file)
    assert lora.is_lora(with_lora) and not lora.is_lora(exported)
    ids, types, mc_index = recipe_input(dictionary)
    with torch.no_grad():
        want_lm, want_mc = with_lora(ids, types, mc_index)
        got_lm, got_mc = exported(ids, types, mc_index)
    torch.testing.assert_close(got_lm, want_lm, rtol=0, atol=1e-4)
    torch.testing.assert_close(got_mc, want_mc, rtol=0, atol=1e-4)


def test_a_lora_model_file_exports_as_an_adapter_that_peft_loads(lora_trained, tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from test_export import agent_double_heads

    model_file, _, _ = lora_trained
    parlai("export_transfertransfo", "-mf", model_file, "--out", tmp_path / "adapter", "--adapter", "true")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    lm.resize_token_embeddings(len(tokenizer))
    peft_lm = PeftModel.from_pretrained(lm, str(tmp_path / "adapter")).eval()
    with_lora, dictionary = agent_double_heads(model_file)
    ids = torch.tensor([dictionary.txt2vec("<bos>i like to ski.<speaker1>yes, every winter.<eos>")])
    assert tokenizer.convert_tokens_to_ids("<speaker1>") == dictionary.special.speaker1
    with torch.no_grad():
        torch.testing.assert_close(peft_lm(input_ids=ids).logits, with_lora.lm(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_a_model_file_of_the_hand_written_lora_still_loads(lora_trained, tiny_llama_dir, tmp_path):
    """A --lora-rank model file written before peft: the backbone's weights under their own
    names, `.lora_A`/`.lora_B`, `.new_rows` and `.new_token_ids` (embedding and tied head).
    Rebuilt here from the legacy artifact exactly as that code laid it out."""
    import shutil

    from safetensors.torch import load_file

    from test_export import agent_double_heads

    model_file, _, _ = lora_trained
    legacy = load_file(os.path.join(LEGACY, "tiny_artifact.safetensors"))
    state = dict(tiny_double_heads(tiny_llama_dir).state_dict(), **legacy)
    state["lm.lm_head.new_rows"] = legacy["lm.model.embed_tokens.new_rows"]
    state["lm.lm_head.new_token_ids"] = legacy["lm.model.embed_tokens.new_token_ids"]
    old = tmp_path / "old" / "model"
    old.parent.mkdir()
    from parlai.utils import pickle as parlai_pickle

    trained = torch.load(model_file, map_location="cpu", pickle_module=parlai_pickle)["model"]
    model_state = {k: v for k, v in trained.items() if not k.startswith("double_heads.")}  # ParlAI's START
    model_state.update({"double_heads." + k: v for k, v in state.items()})
    torch.save({"model": model_state}, old)
    for suffix in (".opt", ".dict", ".dict.hf", ".hf_config.json"):  # rank 4, alpha 16, as the artifact
        (shutil.copytree if suffix == ".dict.hf" else shutil.copy)(model_file + suffix, str(old) + suffix)

    double_heads, _ = agent_double_heads(str(old))
    assert lora.is_lora(double_heads)
    assert_same_outputs(legacy_view(outputs(double_heads)), load_file(os.path.join(LEGACY, "tiny_outputs.safetensors")), atol=1e-6)
