"""Patches `parlai.tasks.convai2.worlds`; the breakage is named in each docstring."""


def fix_convai2_personas_offline(worlds):
    """ParlAI's convai2 self-chat and interactive worlds take their personas from ConvAI2's
    training file (`train_both_original.txt`), downloading ConvAI2 first: offline,
    `parlai self_chat -t convai2` stops with a download error.  Without the installed file,
    serve the packaged PERSONA-CHAT training personas (the same personas), no download."""
    from parlai_transfertransfo.selfchat.personas import convai2_personas

    parlai_load_personas = worlds._load_personas
    worlds._load_personas = lambda opt: convai2_personas(opt, parlai_load_personas)
