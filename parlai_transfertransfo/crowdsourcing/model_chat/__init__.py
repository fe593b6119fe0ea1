"""ConvAI2-style live chats between crowd workers and transfertransfo models (see run.py)."""
