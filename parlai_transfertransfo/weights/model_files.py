"""ParlAI transfertransfo model files, read and written without an agent of ours.

Out: a model file becomes a `save_pretrained` folder that transformers loads alone:
    GPT / GPT-2     config.json + model.safetensors of the *DoubleHeadsModel (both heads)
    Llama family    config.json + model.safetensors of the causal LM, and the MC head,
                    `nn.Linear(hidden, 1)`, in mc_head.safetensors (`weight`, `bias`)
    all             the tokenizer, with the recipe's five special tokens
or, trained with --lora-rank, a PEFT adapter folder (lora.py). In: a save_pretrained folder
becomes a model file with exactly the layout `parlai train_model` writes.
"""
import os

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.segments import SPECIAL_TOKENS
from parlai_transfertransfo.weights import backbones, lora
from parlai_transfertransfo.weights.atomic_files import atomic_directory
from parlai_transfertransfo.weights.safe_load import load_states
from parlai_transfertransfo.weights.tokenizers import load_local

MC_HEAD_FILE = "mc_head.safetensors"


def _one_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def export_pretrained(model_file, out_dir, adapter=False, trust=False):
    """Write a ParlAI transfertransfo model file as a save_pretrained folder (see the module
    docstring for what goes where); returns the list of files written.

    adapter=True writes a model trained with --lora-rank as its PEFT adapter folder instead
    (`lora.save_adapter`: adapter, MC head, transfertransfo.json), with the tokenizer.
    """
    double_heads = load_model_file(model_file, merge=not adapter, trust=trust)
    tokenizer = load_local(model_file + ".dict.hf")
    os.makedirs(out_dir, exist_ok=True)
    stale = os.path.join(out_dir, MC_HEAD_FILE)
    if os.path.exists(stale):
        os.remove(stale)
    if adapter:
        from parlai.core.opt import Opt

        if not lora.is_lora(double_heads):
            raise TransfertransfoError(f"'{model_file}' was not trained with --lora-rank: export it without --adapter")
        backbone = Opt.load(model_file + ".opt").get("model_name") if os.path.exists(model_file + ".opt") else None
        lora.save_adapter(double_heads, out_dir, backbone=backbone, special_ids=special_ids(model_file))
        tokenizer.save_pretrained(out_dir)
        return sorted(os.listdir(out_dir))
    double_heads.lm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if double_heads.mc_head is not None:
        from safetensors.torch import save_file

        head = {k: v.detach().contiguous() for k, v in double_heads.mc_head.state_dict().items()}
        save_file(head, stale, metadata={"format": "pt", "module": "nn.Linear(hidden, 1)"})
    return sorted(os.listdir(out_dir))


def special_ids(model_file):
    """The recipe's special tokens -> their ids, from the model file's tokenizer."""
    tokenizer = load_local(model_file + ".dict.hf")
    return {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}


def load_model_file(model_file, merge=True, trust=False):
    """The DoubleHeads of a ParlAI transfertransfo model file, in float32, without building an
    agent, weights-only (safe_load; `trust` is --trust-model-file). A --lora-rank model comes
    back with its LoRA merged, or as peft wraps it (merge=False)."""
    for path in (model_file, model_file + ".hf_config.json", model_file + ".dict.hf"):
        if not os.path.exists(path):
            raise TransfertransfoError(f"'{path}' is missing: is '{model_file}' a transfertransfo model file?")
    config = backbones.load_config_file(model_file + ".hf_config.json")
    double_heads = backbones.double_heads_from_config(config)
    states = load_states(model_file, trust=trust)
    prefix = "double_heads."
    weights = {k[len(prefix):]: v for k, v in states.get("model", {}).items() if k.startswith(prefix)}
    if not weights:
        raise TransfertransfoError(f"'{model_file}' holds no transfertransfo model weights")
    lora_a = [v for k, v in weights.items() if ".lora_A" in k]
    if lora_a:  # trained with --lora-rank: wrap the same way, load, then fold the deltas in
        from parlai.core.opt import Opt

        alpha = lora.DEFAULT_ALPHA
        if os.path.exists(model_file + ".opt"):
            alpha = Opt.load(model_file + ".opt").get("lora_alpha", alpha)
        lora.apply_lora(double_heads, lora_a[0].shape[0], alpha, list(special_ids(model_file).values()))
        weights = lora.upgrade_legacy_state(weights, double_heads.state_dict())
    try:
        double_heads.load_state_dict(weights)
    except RuntimeError as e:
        raise TransfertransfoError(f"'{model_file}' does not fit its .hf_config.json: {_one_line(e)}")
    if lora_a and merge:
        lora.merge_lora(double_heads)
    return double_heads.float().eval()


def extract_adapter(model_file: str, folder: str) -> list:
    """Write the adapter folder of a ParlAI model file trained with --lora-rank."""
    double_heads = load_model_file(model_file, merge=False)
    if not lora.is_lora(double_heads):
        raise TransfertransfoError(f"{model_file} was not trained with LoRA (--lora-rank > 0)")
    from parlai.core.opt import Opt

    backbone = Opt.load(model_file + ".opt").get("model_name")
    ids = special_ids(model_file)
    # a run killed while writing never leaves a half-written adapter folder
    atomic_directory(folder, lambda staging: lora.save_adapter(double_heads, staging, backbone=backbone, special_ids=ids))
    return sorted(os.listdir(folder))


def write_model_file(pretrained_dir, model_file, datapath, model_name):
    """Build the agent over a save_pretrained folder and let it save itself: the model file
    then has exactly the layout `parlai train_model` writes."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    os.makedirs(os.path.dirname(os.path.abspath(model_file)), exist_ok=True)
    parser = ParlaiParser(True, True)
    opt = parser.parse_args([
        "-m", "transfertransfo", "--model-name", pretrained_dir, "-mf", model_file,
        "--datapath", datapath, "-dt", "valid", "--no-cuda",
    ])
    agent = create_agent(opt)
    for o in (agent.opt, agent.opt.get("override", {})):
        o["model_name"] = model_name  # the backbone's name, not the temporary folder
    agent.save(model_file)
