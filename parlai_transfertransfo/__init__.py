"""TransferTransfo for ParlAI. Kept import-free: a .pth file imports it at every start."""
__version__ = "0.1.0"
