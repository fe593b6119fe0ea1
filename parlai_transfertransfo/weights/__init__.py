"""Where weights come from and go: backbones (the hub, local folders, the embedded SmolLM2
GGUF), ParlAI model files read and exported without an agent, the released TransferTransfo
checkpoint's conversion, peft LoRA adapters, weights-only (safe) loading, atomic writes.
Read backbones.py first.

May import: the recipe, `parlai_transfertransfo.errors`, and ParlAI's own file formats
(`parlai.core.opt`). Never the agent or the apps.
"""
