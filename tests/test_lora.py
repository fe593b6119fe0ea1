"""LoRA over a tiny random Llama: transparent at init, only the intended tensors train,
merging changes nothing, the artifact round-trips, and a CLI-trained model (--lora-rank)
extracts to an artifact that rebuilds a model with the very same scores."""
import os
import subprocess
import sys

import pytest
import torch

from parlai_transfertransfo import backbones, lora
from parlai_transfertransfo.errors import TransfertransfoError

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")
NEW_IDS = [50257, 50258, 50260, 50261, 50259]  # <bos> <eos> <speaker1> <speaker2> <pad>, as added


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
    # B = 0; only the new tokens' logits, a separate smaller matmul, may round differently
    assert_same_outputs(outputs(double_heads), before, atol=1e-8)
    # 7 targets x 2 layers of A/B, the new rows (tied head: once) and their ids, the MC head
    assert len(lora.lora_state(double_heads)) == 7 * 2 * 2 + 2 + 2


def test_only_lora_the_new_rows_and_the_mc_head_train(tiny_llama_dir):
    double_heads = tiny_double_heads(tiny_llama_dir)
    base = {k: v.clone() for k, v in double_heads.state_dict().items()}
    lora.apply_lora(double_heads, rank=4, alpha=16, new_token_ids=NEW_IDS)
    trainable = {n for n, p in double_heads.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.endswith(("lora_A", "lora_B", "new_rows")) or n.startswith("mc_head.")}
    # rank 4 x (in + out) of q, k, v, o, gate, up, down in 2 layers; 5 new rows of 32; MC head
    assert lora.trainable_parameters(double_heads) == 2 * 4 * (64 + 48 + 48 + 64 + 3 * 96) + 5 * 32 + 33

    train_steps(double_heads)
    state = double_heads.state_dict()
    for key, value in base.items():  # every backbone weight is bit-identical, embeddings included
        if not key.startswith("mc_head."):
            assert torch.equal(state[key], value), key
    assert not torch.equal(state["lm.model.embed_tokens.new_rows"], base["lm.model.embed_tokens.weight"][NEW_IDS])
    assert not torch.equal(state["mc_head.weight"], base["mc_head.weight"])
    assert state["lm.model.layers.0.self_attn.q_proj.lora_B"].abs().sum() > 0

    lora.merge_lora(double_heads)  # merged: only the new rows differ from the embedding
    embed = double_heads.lm.get_input_embeddings().weight
    assert torch.equal(embed[:50257], base["lm.model.embed_tokens.weight"][:50257])
    assert not torch.equal(embed[50257:], base["lm.model.embed_tokens.weight"][50257:])
    assert double_heads.lm.get_output_embeddings().weight is embed  # still tied


def test_merged_model_gives_the_same_outputs_with_plain_modules(tiny_llama_dir):
    double_heads = train_steps(lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, NEW_IDS))
    before = outputs(double_heads)
    lora.merge_lora(double_heads)
    assert_same_outputs(outputs(double_heads), before, atol=1e-5)
    assert not lora.is_lora(double_heads)
    assert all(p.requires_grad for p in double_heads.parameters())
    assert set(double_heads.state_dict()) == set(tiny_double_heads(tiny_llama_dir).state_dict())


def test_artifact_round_trips_tensors_and_metadata(tiny_llama_dir, tmp_path):
    trained = train_steps(lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 8.0, NEW_IDS))
    size = lora.save_artifact(trained, tmp_path / "a.safetensors", backbone=tiny_llama_dir)
    assert size == os.path.getsize(tmp_path / "a.safetensors")
    tensors, meta = lora.load_artifact(str(tmp_path / "a.safetensors"))
    assert (meta["rank"], meta["alpha"], meta["backbone"]) == (4, 8.0, tiny_llama_dir)
    assert meta["targets"] == tuple(sorted(lora.DEFAULT_TARGETS))
    assert (meta["vocab_size"], meta["base_vocab_size"], meta["new_token_ids"]) == (50262, 50257, NEW_IDS)
    assert meta["special_ids"] == {"<bos>": 50257, "<eos>": 50258, "<speaker1>": 50260, "<speaker2>": 50261, "<pad>": 50259}

    fresh = lora.apply_lora(tiny_double_heads(tiny_llama_dir), meta["rank"], meta["alpha"], meta["new_token_ids"])
    lora.load_lora_state(fresh, tensors)
    assert_same_outputs(outputs(fresh), outputs(trained), atol=0)

    other_rank = lora.apply_lora(tiny_double_heads(tiny_llama_dir), 2, 8.0, NEW_IDS)
    with pytest.raises(TransfertransfoError, match="lora_A is"):
        lora.load_lora_state(other_rank, tensors)


def test_gpt2_and_double_wrapping_are_refused_in_one_line(tiny_gpt2_dir, tiny_llama_dir):
    with pytest.raises(TransfertransfoError, match="Llama-family backbones"):
        lora.apply_lora(backbones.load_double_heads(tiny_gpt2_dir), 4, 16, [0])
    double_heads = lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, NEW_IDS)
    with pytest.raises(TransfertransfoError, match="already applied"):
        lora.apply_lora(double_heads, 4, 16, NEW_IDS)
    with pytest.raises(TransfertransfoError, match="no Linear layers named c_attn"):
        lora.apply_lora(tiny_double_heads(tiny_llama_dir), 4, 16, NEW_IDS, targets=("q_proj", "c_attn"))


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
    from test_cli_agent import first_dialogs

    out = tmp_path_factory.mktemp("lora")
    dialogs = first_dialogs(4, out / "four.txt")
    parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tiny_llama_dir, "--lora-rank", 4,
        "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 0,
        "-mf", out / "model", "--datapath", out / "data", "-bs", 8, "--num-epochs", 3, "-lr", 1e-2,
        "--skip-generation", "true", "--validation-every-n-epochs", -1,
    )
    return str(out / "model"), dialogs, out


def test_cli_lora_model_file_keeps_the_backbone_and_extracts_a_small_artifact(lora_trained, tiny_llama_dir):
    model_file, _, out = lora_trained
    from parlai.utils import pickle as parlai_pickle

    state = torch.load(model_file, map_location="cpu", pickle_module=parlai_pickle)["model"]
    backbone = tiny_double_heads(tiny_llama_dir).state_dict()
    for key in ("lm.model.layers.1.mlp.down_proj.weight", "lm.model.norm.weight", "lm.model.embed_tokens.weight"):
        # the resized rows are drawn at random on each load; new_rows replace them anyway
        assert torch.equal(state["double_heads." + key][:50257], backbone[key][:50257]), key
    assert state["double_heads.lm.model.layers.1.mlp.down_proj.lora_B"].abs().sum() > 0

    size = lora.extract_artifact(model_file, str(out / "artifact.safetensors"))
    tensors, meta = lora.load_artifact(str(out / "artifact.safetensors"))
    assert (meta["rank"], meta["alpha"], meta["backbone"]) == (4, 16.0, tiny_llama_dir)
    assert size < 200_000 and len(tensors) == 32


def test_zoo_build_from_the_extracted_artifact_scores_like_the_lora_model(lora_trained):
    from parlai_transfertransfo.zoo.transfertransfo.smollm2_135m import build

    model_file, dialogs, out = lora_trained
    lora.extract_artifact(model_file, str(out / "artifact.safetensors"))
    built = build(str(out / "zoo_data"), str(out / "artifact.safetensors"))
    common = ["-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 0, "-bs", 8,
              "--skip-generation", "true", "--datapath", out / "eval"]
    trained = final_report(parlai("eval_model", "-mf", model_file, *common))
    merged = final_report(parlai("eval_model", "-mf", built, *common))
    assert trained["exs"] == merged["exs"] == 29
    for metric in ("hits@1", "hits@5", "hits@10", "loss", "ppl", "token_acc"):
        assert merged[metric] == pytest.approx(trained[metric], rel=1e-4, abs=1e-6), metric


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
