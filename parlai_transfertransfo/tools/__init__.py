"""Developer tools: `python -m parlai_transfertransfo.tools.dev_outputs` records and compares a
model's dev-set scores and replies (used when a weights format changes); convai2_official.py
and official_ppl.py are `parlai convai2_official_eval` (ConvAI2's official hits@1, F1 and
word-level perplexity).

May import everything below the plugin.
"""
