"""Hugging Face's released TransferTransfo checkpoint into a ParlAI model file.

`gpt_personachat_cache.tar.gz`, a transformers 2.x `OpenAIGPTDoubleHeadsModel` folder,
becomes a model file the way ParlAI's `agents/bart/convert_fairseq_to_parlai.py` brings
fairseq checkpoints in. The way out (export) is model_files.py.
"""
import json
import os
import tarfile
import tempfile

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.segments import ATTR_TO_SPECIAL_TOKEN, SPECIAL_TOKENS
from parlai_transfertransfo.weights.model_files import _one_line, write_model_file
from parlai_transfertransfo.weights.safe_load import load_states

LEGACY_WEIGHTS = "pytorch_model.bin"
# OpenAIGPTConfig fields that kept their name and meaning from transformers 2.x to 5.
LEGACY_CONFIG_KEYS = (
    "n_embd", "n_layer", "n_head", "afn", "resid_pdrop", "embd_pdrop", "attn_pdrop",
    "layer_norm_epsilon", "initializer_range", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
)
# pytorch_pretrained_bert names (before the archive was re-saved for pytorch-transformers
# 1.2, transfer-learning-conv-ai PR #29) -> today's.
LEGACY_RENAMES = (
    ("lm_head.decoder.weight", "lm_head.weight"),
    ("multiple_choice_head.linear.", "multiple_choice_head.summary."),
)


# --- in: the released OpenAI GPT checkpoint -----------------------------------------------
def convert_personachat_checkpoint(source, model_file, datapath=None):
    """Write a ParlAI model file (+ .opt, .dict, .dict.hf, .hf_config.json) at `model_file`
    from the released checkpoint: its .tar.gz, or the folder it extracts to."""
    with tempfile.TemporaryDirectory(prefix="transfertransfo-convert-") as tmp:
        folder = source
        if os.path.isfile(source):
            folder = extract_archive(source, os.path.join(tmp, "archive"))
        elif not os.path.isdir(source):
            raise TransfertransfoError(f"no checkpoint at '{source}'")
        lm, tokenizer = load_legacy_double_heads(folder)
        staging = os.path.join(tmp, "pretrained")
        lm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_model_file(staging, model_file, datapath or tmp, model_name="openai-gpt")


def extract_archive(archive, into):
    """Extract a .tar.gz (no paths outside `into`) and return the folder holding config.json:
    the archive's root (the release) or its single sub-folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.ReadError, EOFError):
        raise TransfertransfoError(
            f"cannot extract '{archive}': not a .tar.gz archive (a failed or partial download?)"
        )
    except (tarfile.TarError, OSError) as e:
        raise TransfertransfoError(f"cannot extract '{archive}': {_one_line(e)}")
    for root, _dirs, files in sorted(os.walk(into)):
        if "config.json" in files and LEGACY_WEIGHTS in files:
            return root
    raise TransfertransfoError(f"'{archive}' holds no config.json with {LEGACY_WEIGHTS}")


def load_legacy_double_heads(folder):
    """(OpenAIGPTDoubleHeadsModel, tokenizer) from a transformers 2.x save_pretrained folder."""
    from transformers import OpenAIGPTDoubleHeadsModel

    for name in ("config.json", LEGACY_WEIGHTS, "vocab.json", "merges.txt"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise TransfertransfoError(f"checkpoint folder '{folder}' lacks {name}")
    state = load_states(os.path.join(folder, LEGACY_WEIGHTS))  # weights-only, never code
    state = legacy_state_dict(state)
    config = legacy_config(os.path.join(folder, "config.json"), state)
    lm = OpenAIGPTDoubleHeadsModel(config).float().eval()
    result = lm.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to tokens_embed
    if missing or result.unexpected_keys:
        raise TransfertransfoError(
            f"{LEGACY_WEIGHTS} does not fit OpenAIGPTDoubleHeadsModel: missing "
            f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    lm.tie_weights()
    tokenizer = legacy_tokenizer(folder)
    if len(tokenizer) != config.vocab_size:
        raise TransfertransfoError(
            f"the tokenizer has {len(tokenizer)} tokens but the embeddings {config.vocab_size} rows"
        )
    return lm, tokenizer


def legacy_state_dict(state):
    """Today's OpenAIGPTDoubleHeadsModel names for a 2.x (or older) state dict.

    Drops the causal-mask buffers 2.x saved (`h.N.attn.bias`, now rebuilt, not stored),
    renames pytorch_pretrained_bert's heads and TF-style `.g/.b/.w`, strips `module.`.
    """
    out = {}
    bare = not any(k.startswith(("transformer.", "module.transformer.")) for k in state)
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if bare and not key.startswith(("lm_head.", "multiple_choice_head.")):
            key = "transformer." + key  # a base-model checkpoint
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key.endswith("position_ids"):
            continue
        for old, new in LEGACY_RENAMES:
            key = key.replace(old, new)
        for old, new in ((".g", ".weight"), (".b", ".bias"), (".w", ".weight")):
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    if "transformer.tokens_embed.weight" not in out:
        raise TransfertransfoError("the checkpoint has no transformer.tokens_embed.weight")
    return out


def legacy_config(path, state):
    """A transformers 5 OpenAIGPTConfig from a 2.x config.json.

    The sizes come from the weights, which are the truth: 2.x `vocab_size` counts the
    special tokens in some saves (40483) and not in others (40478 + `n_special`).
    """
    from transformers import OpenAIGPTConfig

    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise TransfertransfoError(f"cannot read '{path}': {_one_line(e)}")
    rows = state["transformer.tokens_embed.weight"].shape[0]
    declared = old.get("vocab_size", rows)
    if rows not in (declared, declared + old.get("n_special", 0)):
        raise TransfertransfoError(
            f"config.json says vocab_size {declared} (n_special {old.get('n_special', 0)}) "
            f"but the checkpoint has {rows} token embeddings"
        )
    summary = state.get("multiple_choice_head.summary.weight")
    return OpenAIGPTConfig(
        vocab_size=rows,
        n_positions=state["transformer.positions_embed.weight"].shape[0],
        num_labels=1 if summary is None else summary.shape[0],
        **{k: old[k] for k in LEGACY_CONFIG_KEYS if k in old},
    )


def legacy_tokenizer(folder):
    """OpenAI GPT's tokenizer from vocab.json + merges.txt, with the special tokens at the
    ids the checkpoint was trained with (added_tokens.json; else appended in the recipe's
    order, as train.py did).

    Built on `tokenizers` directly, the pipeline of transformers' OpenAIGPTTokenizer
    (lower-casing BERT pre-tokenization, `</w>` BPE), because that class insists on an
    `<unk>` token which OpenAI GPT's vocabulary may lack: without one, characters outside
    the vocabulary are dropped instead of raising on every encode.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, encoding="utf-8") as f:
        vocab = json.load(f)
    unk = "<unk>" if "<unk>" in vocab else None
    backend = Tokenizer(BPE.from_file(
        vocab_file, merges_file, continuing_subword_prefix="", end_of_word_suffix="</w>",
        unk_token=unk,
    ))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.BPEDecoder(suffix="</w>")

    expected = {tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    added_file = os.path.join(folder, "added_tokens.json")
    if os.path.isfile(added_file):
        with open(added_file, encoding="utf-8") as f:
            expected = json.load(f)
    order = sorted(expected, key=expected.get)
    backend.add_special_tokens(order)
    got = {tok: backend.token_to_id(tok) for tok in order}
    if got != expected or not set(SPECIAL_TOKENS) <= set(expected):
        raise TransfertransfoError(
            f"special tokens {expected} do not follow the {len(vocab)} BPE tokens of vocab.json"
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk, **ATTR_TO_SPECIAL_TOKEN)
