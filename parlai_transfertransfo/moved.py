"""The flat modules of 0.1 (`parlai_transfertransfo.modeling`, `.agents`, ...) at their new
homes in the layers, for one release: importing one warns (DeprecationWarning, naming the
new module) and gives the new module, or, for a module that was split, a module that looks
each name up in the modules that share its old contents.

`__init__.py` puts `MovedModuleFinder` on `sys.meta_path`; it answers only for the names
below, so it costs other imports one dictionary lookup.
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

PACKAGE = "parlai_transfertransfo"
MOVED = {  # old module -> its new module(s), the first being where most of it went
    "agents": ("agent.transfertransfo", "agent.instances", "agent.losses", "agent.ranking", "data.personas"),
    "parlai_model": ("agent.model",),
    "dictionary": ("agent.dictionary", "weights.tokenizers"),
    "history": ("agent.history",),
    "checkpointing": ("agent.checkpointing", "weights.atomic_files"),
    "option_checks": ("agent.option_checks",),
    "nucleus": ("agent.nucleus",),
    "word_ppl": ("agent.word_ppl",),
    "compat": ("plugin.compat",),
    "registration": ("plugin.registration",),
    "backbones": ("weights.backbones",),
    "convert": ("weights.convert", "weights.model_files"),
    "lora": ("weights.lora", "weights.model_files"),
    "safe_load": ("weights.safe_load",),
    "dev_outputs": ("tools.dev_outputs",),
    "inputs": ("recipe.segments",),
    "modeling": ("recipe.double_heads", "recipe.prefix", "recipe.architectures"),
    "kv_cache": ("recipe.kv_cache",),
    "packing": ("recipe.packing",),
    "packed_pass": ("recipe.packed_pass",),
    "persona_cache": ("recipe.persona_cache",),
}
RENAMED = {"_load_local": "load_local", "_write_model_file": "write_model_file"}


class _SplitModule(types.ModuleType):
    """An old module whose names now live in several modules."""

    def __init__(self, name, targets):
        super().__init__(name, f"moved to {', '.join(t.__name__ for t in targets)}")
        self._targets = targets

    def __getattr__(self, name):
        for target in self._targets:
            if hasattr(target, RENAMED.get(name, name)):
                return getattr(target, RENAMED.get(name, name))
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self):
        return sorted({n for t in self._targets for n in dir(t)})


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old, new):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(
            f"{PACKAGE}.{self.old} moved to {' and '.join(f'{PACKAGE}.{n}' for n in self.new)}; the old "
            "name goes in the next release (docs/architecture.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        targets = [importlib.import_module(f"{PACKAGE}.{n}") for n in self.new]
        if len(targets) == 1:
            self.real_spec = targets[0].__spec__
            return targets[0]
        return _SplitModule(spec.name, targets)

    def exec_module(self, module):
        if not isinstance(module, _SplitModule):  # the import system set the alias's spec on it
            module.__spec__ = self.real_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        package, _, old = fullname.rpartition(".")
        if package != PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(old, MOVED[old]))


def install():
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
