"""Patches `mephisto.utils.dirs`; the breakage is named in each docstring."""


def fix_mephisto_data_dir_prompt(dirs):
    """Mephisto's `get_root_data_dir()` asks for a data directory on standard input
    (`input("Please enter the full path ...")`) unless `~/.mephisto/config.yml` names one:
    an unattended launch or a test hangs, and every run on the machine shares one
    database.  Take the directory from TRANSFERTRANSFO_MEPHISTO_DIR when it is set (our
    launcher always sets it, one per run or test), and never prompt."""
    import os

    configured = dirs.get_root_data_dir

    def get_root_data_dir():
        path = os.environ.get("TRANSFERTRANSFO_MEPHISTO_DIR")
        if path:
            os.makedirs(path, exist_ok=True)
            dirs.loaded_data_dir = path
            return path
        if dirs.loaded_data_dir is None and dirs.get_config_arg(dirs.CORE_SECTION, dirs.DATA_STORAGE_KEY) is None:
            raise RuntimeError(
                "Mephisto has no data directory: set TRANSFERTRANSFO_MEPHISTO_DIR "
                "(the crowdsourcing launcher sets it from mephisto_data_dir)"
            )
        return configured()

    dirs.get_root_data_dir = get_root_data_dir
