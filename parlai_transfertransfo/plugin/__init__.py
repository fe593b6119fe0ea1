"""Directories that registration.py appends to ParlAI's package paths.

`plugin/agents/transfertransfo/transfertransfo.py` is what ParlAI imports for
`-m transfertransfo`; it only re-exports the real agent.
"""
