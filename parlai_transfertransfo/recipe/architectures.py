"""Which backbones the recipe runs on, and the transformers class that holds each one's weights.

GPT and GPT-2 come with transformers' own double-heads classes; Llama-family causal LMs get
our MC head (double_heads.py). Checked before any weights are built, so an unsupported
architecture is one line.
"""
from parlai_transfertransfo.errors import TransfertransfoError

GPT_DOUBLE_HEADS = {"gpt2": "GPT2DoubleHeadsModel", "openai-gpt": "OpenAIGPTDoubleHeadsModel"}
# Decoder-only families whose base model takes (inputs_embeds, attention_mask, position_ids,
# cache) and keeps a plain per-layer key/value cache: the Llama recipe and its close kin.
CAUSAL_LM_FAMILY = ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite", "phi3")
SUPPORTED = tuple(GPT_DOUBLE_HEADS) + CAUSAL_LM_FAMILY


def check_supported(config):
    """Fail in one line, naming the architecture, before any weights are built."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        raise TransfertransfoError(
            f"unsupported architecture '{model_type}': supported are {', '.join(SUPPORTED)}"
        )
    return model_type


def lm_class_for(config):
    """The transformers class that holds the pretrained weights for this config."""
    import transformers

    model_type = check_supported(config)
    if model_type in GPT_DOUBLE_HEADS:
        return getattr(transformers, GPT_DOUBLE_HEADS[model_type])
    return transformers.AutoModelForCausalLM
