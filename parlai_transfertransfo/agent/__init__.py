"""ParlAI glue: `TransfertransfoAgent` (transfertransfo.py, ParlAI's hooks), the model
wrapper ParlAI's generator drives (model.py), the dictionary over a Hugging Face tokenizer,
the recipe's history, its options and their checks, the two losses, candidate ranking,
checkpointing, the faster nucleus sampler, and `next_word_probability` (next_word.py). Read transfertransfo.py first.

May import: ParlAI, the recipe, weights and data. Never the apps or the plugin.
"""
