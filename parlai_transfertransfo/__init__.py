"""TransferTransfo for ParlAI, in layers (docs/architecture.md):

    plugin/    how ParlAI finds us: registration, compat patches, the `-m` shim
    serving/ selfchat/ crowdsourcing/ distributed/ scripts/ tools/   the apps
    agent/     ParlAI glue: TransfertransfoAgent, its model wrapper, dictionary, history
    weights/ data/   where weights and PERSONA-CHAT files come from and go
    recipe/    the recipe itself: pure torch + transformers, no ParlAI

Imports point down only. Kept import-free (a .pth file imports it at every start) but for
moved.py, which keeps the 0.1 module names importable for one release.
"""
from parlai_transfertransfo import moved as _moved

__version__ = "0.1.0"
_moved.install()
