"""Personas for ParlAI's convai2 self-chat (and interactive) worlds, offline.

ParlAI reads them from the `convai2:both` file of the datatype's fold
(`{datapath}/ConvAI2/train_both_original.txt` for self-chat's default `-dt train`),
downloading ConvAI2 first when it is missing.  That file's personas are the PERSONA-CHAT
training personas we package (`data/personas.py`), so when it is not installed we serve
those, with no download: the same personas, as the same `your persona: ...` lines.
"""
import os

from parlai_transfertransfo.data import personas as packaged
from parlai_transfertransfo.data.convai2 import FOLDER, VERSION


def convai2_file(opt):
    """The path of the ConvAI2 file ParlAI's persona loader reads for `opt`'s datatype."""
    fold = (opt.get("datatype") or "train").split(":")[0]
    fold = "valid" if fold == "test" else fold  # ConvAI2 has no test file; ParlAI reads valid
    return os.path.join(opt["datapath"], FOLDER, f"{fold}_both_original.txt")


def is_installed(path):
    import parlai.core.build_data as build_data

    return build_data.built(os.path.dirname(path), VERSION) and os.path.isfile(path)


def packaged_personas():
    """The distinct packaged training personas (ParlAI's loader gives each once too), as the
    text a convai2 world gives its agent."""
    return list(dict.fromkeys(packaged.persona_text(p) for p in packaged.load_personas()))


_loaded = {}  # path -> personas: a batch of self-chat worlds loads them once, not once each


def convai2_personas(opt, parlai_load_personas):
    """ParlAI's own loader when ConvAI2's file is installed, else the packaged personas."""
    path = convai2_file(opt)
    installed = is_installed(path)
    if (path, installed) not in _loaded:
        if installed:
            personas = parlai_load_personas(opt)
        else:
            personas = packaged_personas()
            print(f"[ {path} is not installed: using the {len(personas)} distinct packaged "
                  "PERSONA-CHAT training personas ]")
        _loaded[path, installed] = personas
    return list(_loaded[path, installed])
