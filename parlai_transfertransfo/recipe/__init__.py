"""The TransferTransfo recipe itself, in pure torch + transformers (no ParlAI).

segments.py (persona + history -> tokens and token types) -> double_heads.py (the LM head
and the next-utterance head over GPT, GPT-2 or a Llama-family backbone, and both losses'
inputs) -> decoding and ranking over cached contexts (prefix.py, kv_cache.py,
persona_cache.py), with packing.py / packed_pass.py running contexts and candidates
without padding; next_words.py gives next-word distributions over a word list (ConvAI2's
official perplexity). Read double_heads.py first.

May import: torch, transformers, `parlai_transfertransfo.errors`. Never ParlAI, never the
layers above (tests/test_architecture.py checks).
"""
