"""Patches `parlai.scripts.self_chat`; the breakage is named in each docstring."""


def fix_self_chat_script(self_chat):
    """ParlAI 1.7.2's `parlai self_chat` asserts `-bs 1` (an AssertionError traceback for
    any other batch size), dies with AttributeError on a `--partner-model-file` that does not
    exist, and loads the partner outside `--datapath`.  Run it as `selfchat.script` does:
    options checked in one line each, the partner under `--datapath`, `-bs N` chats batched."""
    from parlai_transfertransfo.selfchat.script import self_chat as checked_batched_self_chat

    self_chat.self_chat = checked_batched_self_chat
