"""Patches `mephisto.operations.hydra_config`, compiled from its source with the fix applied."""


def _with_default_factories(source, module, fields):
    """`name: T = T()` -> `name: T = field(default_factory=T)` for each (name, T), exactly
    once each: a changed upstream file fails loudly instead of half-patched."""
    for name, cls in fields:
        old = f"{name}: {cls} = {cls}()"
        if source.count(old) != 1:
            raise ImportError(f"compat: {module} no longer reads `{old}`: update plugin/compat")
        source = source.replace(old, f"{name}: {cls} = field(default_factory={cls})")
    return source


def fix_mephisto_hydra_config_source(source):
    """Mephisto 1.1.1's `mephisto/operations/hydra_config.py` gives dataclass fields
    instances as defaults (`task: TaskRunArgs = TaskRunArgs()`), which Python 3.11 rejects
    while the module is executed: `ValueError: mutable default <class ...TaskRunArgs> for
    field task is not allowed: use default_factory`, so nothing of Mephisto imports.
    Compiled from source with default factories, as later Mephisto releases do."""
    return _with_default_factories(
        source,
        "mephisto.operations.hydra_config",
        [("task", "TaskRunArgs"), ("database", "DatabaseArgs"), ("mephisto", "MephistoConfig")],
    )
