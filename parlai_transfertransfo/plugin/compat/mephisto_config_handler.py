"""Patches `mephisto.operations.config_handler`; the breakage is named in each docstring."""


def fix_mephisto_config_at_import(config_handler):
    """`import mephisto` runs `init_config()`, which creates `~/.mephisto/config.yml` in the
    user's home (a write at import time, which fails on a read-only home), and
    `get_config_arg` raises FileNotFoundError when that file is absent.  Create nothing;
    read the file when the user has one (MTurk's `allowed_locales`, a data directory set
    with `mephisto config`), else behave as if it were empty."""
    import os

    read = config_handler.get_config

    def get_config():
        if not os.path.exists(config_handler.DEFAULT_CONFIG_FILE):
            return {}
        return read() or {}

    config_handler.init_config = lambda: None
    config_handler.get_config = get_config
