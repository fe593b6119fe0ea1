"""Patches `parlai.tasks.convai2.agents`; the breakage is named in each docstring."""


def guard_convai2_teachers(agents):
    """ParlAI's convai2 teachers retry a download that cannot work offline (~15 s) and
    then raise a traceback; a variant whose file is not installed dies with
    FileNotFoundError.  Both become one line that says how to install the files
    (`parlai install_convai2`)."""
    from parlai_transfertransfo.data.convai2 import guard_convai2_teachers as guard

    guard(agents)
