"""Make ParlAI find our agent, zoo entries, tasks and scripts by their short names.

ParlAI 1.7.2 has no plugin entry points: it imports agents as `parlai.agents.<name>`, zoo
entries as `parlai.zoo.<name>.<entry>`, tasks as `parlai.tasks.<name>`, and lists
subcommands from the directory of `parlai.scripts`.  The `parlai_transfertransfo.pth` file
that pip installs beside this package calls `install_from_pth()` when any Python starts
(spawned multiprocessing workers too).  That adds one finder to `sys.meta_path` and
imports nothing else; when ParlAI later imports one of those four packages, the finder
appends our directories to its `__path__`, and when it imports a module that
`compat.PATCHES` fixes (compat/), the patch is applied right after the module has loaded.  The few
modules that cannot even be imported as shipped (`compat.SOURCE_PATCHES`: Mephisto's and
ParlAI's dataclasses that Python 3.11 rejects) are compiled from their source with the
fix applied, never from a stale bytecode cache.
"""
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

from parlai_transfertransfo.plugin import compat

_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
_PKG_DIR = os.path.dirname(_PLUGIN_DIR)


def _package_dir(name):
    """Where a sub-package of ours lives (the repository in editable installs)."""
    spec = importlib.util.find_spec(name)
    return list(spec.submodule_search_locations)[0]


@functools.lru_cache(maxsize=None)
def plugin_paths():
    """ParlAI package -> the directories of ours that extend it."""
    return {
        "parlai.agents": [os.path.join(_PLUGIN_DIR, "agents")],
        "parlai.scripts": [os.path.join(_PKG_DIR, "scripts")],
        "parlai.zoo": [_package_dir("parlai_transfertransfo.zoo")],
        "parlai.tasks": [_package_dir("parlai_transfertransfo.tasks")],
    }


def _after_load(module):
    extra = plugin_paths().get(module.__name__)
    if extra:
        for path in extra:
            if path not in module.__path__:
                module.__path__.append(path)
    patch = compat.PATCHES.get(module.__name__)
    if patch is not None and not getattr(module, "_transfertransfo_compat", False):
        patch(module)
        module._transfertransfo_compat = True


class _ExtendingLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _after_load(module)

    def __getattr__(self, name):  # get_source, is_package, ... for tools that ask
        return getattr(self.inner, name)


class _SourcePatchedLoader(importlib.machinery.SourceFileLoader):
    """Compiles a module from its source text after `compat.SOURCE_PATCHES` fixed it."""

    def get_code(self, fullname):
        source = compat.SOURCE_PATCHES[fullname](self.get_source(fullname))
        return compile(source, self.path, "exec", dont_inherit=True)


class ParlAIPluginFinder(importlib.abc.MetaPathFinder):
    """Wraps the real loader of the few ParlAI modules we extend or patch."""

    targets = (
        {"parlai.agents", "parlai.scripts", "parlai.zoo", "parlai.tasks"}
        | set(compat.PATCHES)
        | set(compat.SOURCE_PATCHES)
    )

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.targets:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if fullname in compat.SOURCE_PATCHES and str(spec.origin).endswith(".py"):
                    spec.loader = _SourcePatchedLoader(fullname, spec.origin)
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ExtendingLoader(spec.loader)
                return spec
        return None


def install():
    """Register with ParlAI; idempotent, and fixes modules that were imported before."""
    if not any(isinstance(f, ParlAIPluginFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, ParlAIPluginFinder())
    for name in ParlAIPluginFinder.targets:
        module = sys.modules.get(name)
        if module is not None:
            _after_load(module)


def install_from_pth():
    """Entry point of the .pth file: a broken install must not break every Python."""
    try:
        install()
    except Exception as err:  # pragma: no cover - only on a damaged installation
        sys.stderr.write(
            f"parlai-transfertransfo: could not register with ParlAI ({err}); "
            "reinstall with ./install.sh\n"
        )
