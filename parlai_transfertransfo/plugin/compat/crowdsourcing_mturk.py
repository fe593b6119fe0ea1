"""Patches `parlai.crowdsourcing.utils.mturk`, compiled from its source with the fix applied."""

from parlai_transfertransfo.plugin.compat.mephisto_hydra_config import _with_default_factories


def fix_parlai_mturk_config_source(source):
    """ParlAI 1.7.2's `parlai/crowdsourcing/utils/mturk.py` declares `mturk: MTurkConfig =
    MTurkConfig()` in a dataclass: on Python 3.11 importing it raises `ValueError: mutable
    default ... use default_factory`, and with it every crowdsourcing task's run script
    config.  Compiled from source with a default factory."""
    return _with_default_factories(
        source, "parlai.crowdsourcing.utils.mturk", [("mturk", "MTurkConfig")]
    )
