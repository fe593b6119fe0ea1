"""How tiny_artifact.safetensors and tiny_outputs.safetensors were made, once, with the
hand-written LoRA that peft replaced (parlai_transfertransfo/lora.py and tests/test_lora.py
of commit 8bb7b27, copied to a folder as old_lora.py and old_test_lora.py):

    python make_legacy.py OUT_DIR        (with that folder first on sys.path, as below)
"""
import os, sys
sys.path.insert(0, "/tmp/ecosystem/legacy"); sys.path.insert(0, "/work/wt/ecosystem/tests")
import torch
import old_lora as lora
from conftest import _save_tiny
from transformers import LlamaConfig, LlamaForCausalLM
from safetensors.torch import save_file
from parlai_transfertransfo.weights import backbones

out = sys.argv[1]
config = LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)
tiny = _save_tiny(os.path.join(out, "tiny-llama"), config, LlamaForCausalLM)
import old_test_lora as T
T.lora = lora
dh = T.tiny_double_heads(tiny)
base_keys = set(dh.state_dict())
lora.apply_lora(dh, 4, 16, T.NEW_IDS)
g = torch.Generator().manual_seed(2)
with torch.no_grad():
    for name, p in dh.named_parameters():
        if p.requires_grad:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
os.makedirs(os.path.join(out, "legacy_lora"), exist_ok=True)
art = os.path.join(out, "legacy_lora", "tiny_artifact.safetensors")
lora.save_artifact(dh, art, backbone="tiny-llama")
outs = T.outputs(dh.eval())
outs["logits"] = outs["logits"][..., 50000:]  # the special tokens' columns and a few more
save_file({k: v.contiguous() for k, v in outs.items()}, os.path.join(out, "legacy_lora", "tiny_outputs.safetensors"))
art_keys = set(lora.load_artifact(art)[0])
model_keys = set(dh.state_dict())
print("model keys == base | artifact | lm_head extras:", model_keys == base_keys | art_keys | {"lm.lm_head.new_rows", "lm.lm_head.new_token_ids"})
print(sorted(model_keys - base_keys - art_keys))
print(os.path.getsize(art))
