"""How ParlAI finds this package, the top layer: registration.py (the import hook the .pth
file installs at every start), compat/ (every patch ParlAI 1.7.2 and Mephisto 1.1.1 need on
today's stack, one module per module patched) and agents/transfertransfo/transfertransfo.py,
what ParlAI imports for `-m transfertransfo` (it only re-exports the real agent).

May import every layer: it wires the apps (scripts, self-chat, crowdsourcing) into ParlAI.
Nothing imports it but the .pth file and tests.
"""
