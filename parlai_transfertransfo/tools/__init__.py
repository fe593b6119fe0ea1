"""Developer tools: `python -m parlai_transfertransfo.tools.dev_outputs` records and compares a
model's dev-set scores and replies (used when a weights format changes).

May import everything below the plugin.
"""
