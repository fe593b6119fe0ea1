"""Where a Mephisto run keeps its state, and cleaning up after one that died.

Mephisto keeps one global data directory (asked on stdin, or `~/.mephisto/config.yml`) and
runs its node router from `site-packages/tmp/`.  Here every run names its own directory
(`mephisto_data_dir`; TRANSFERTRANSFO_MEPHISTO_DIR in the environment, read by plugin/compat/mephisto_dirs.py's
Mephisto patches), which holds its database, the routers' working folders and a record of
the router processes it started, so that the next launch can stop one that a SIGKILL left
behind.  Nothing under `~/.mephisto` is read or written.
"""
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time

ENV_VAR = "TRANSFERTRANSFO_MEPHISTO_DIR"
_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
OFFENSIVE_WORDS = os.path.join(_ASSETS, "offensive_words.txt")
_ROUTERS = "routers.json"


def default_data_dir() -> str:
    """ParlAI's datapath + /mephisto: where a run keeps its data unless told otherwise."""
    from parlai.core.params import ParlaiParser

    return os.path.join(ParlaiParser(False, False).parse_args([])["datapath"], "mephisto")


def use_data_dir(path: str) -> str:
    """Make `path` this process's Mephisto data directory (and its children's)."""
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    os.environ[ENV_VAR] = path
    import mephisto.utils.dirs as dirs

    dirs.loaded_data_dir = path
    return path


def data_dir() -> str:
    path = os.environ.get(ENV_VAR)
    if not path:
        raise RuntimeError(f"no Mephisto data directory: call use_data_dir() first ({ENV_VAR})")
    return path


def server_tmp_dir() -> str:
    """Replaces Mephisto's `site-packages/tmp`: the local routers' working folders."""
    return os.path.join(data_dir(), "tmp")


# ------------------------------------------------------------------------ router processes
def _libc_prctl():
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not Linux: the pid record still catches orphans
        return None


def _die_with_parent(preexec_fn):
    prctl = _libc_prctl()

    def before_exec():
        if preexec_fn is not None:
            preexec_fn()
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return before_exec


def die_with_parent():
    """A Popen preexec_fn: the child gets SIGTERM when its parent dies (Linux)."""
    return _die_with_parent(None)


class _SubprocessDyingWithParent:
    """The `subprocess` module, but Popen's children get SIGTERM when their parent dies."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, preexec_fn=None, **kwargs):
        if "stdout" not in kwargs:  # the router prints every packet: keep it in the run's log
            log = open(os.path.join(data_dir(), "router.log"), "ab")
            kwargs.update(stdout=log, stderr=subprocess.STDOUT)
        return subprocess.Popen(*args, preexec_fn=_die_with_parent(preexec_fn), **kwargs)


@contextlib.contextmanager
def router_dies_with_parent(module):
    """While Mephisto's local architect starts its router (`module.subprocess.Popen`)."""
    real = module.subprocess
    module.subprocess = _SubprocessDyingWithParent()
    try:
        yield
    finally:
        module.subprocess = real


def _start_time(pid):
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _read_routers(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_routers(path, routers):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(routers, f)
    os.replace(tmp, path)


def record_router(pid):
    if pid is None:
        return
    path = os.path.join(data_dir(), _ROUTERS)
    routers = _read_routers(path)
    routers[str(pid)] = {"start": _start_time(pid), "owner": os.getpid()}
    _write_routers(path, routers)


def forget_router(pid):
    path = os.path.join(data_dir(), _ROUTERS)
    routers = _read_routers(path)
    if routers.pop(str(pid), None) is not None:
        _write_routers(path, routers)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_orphaned_routers(path=None) -> list:
    """Stop the routers recorded in this data directory whose launcher is gone (SIGKILL);
    the pids of those stopped.  A pid reused by another program is left alone."""
    path = os.path.join(path or data_dir(), _ROUTERS)
    routers = _read_routers(path)
    stopped = []
    for pid_text, info in list(routers.items()):
        pid = int(pid_text)
        if info.get("owner") and info["owner"] != os.getpid() and _alive(info["owner"]):
            continue  # a live launcher still owns it
        if _alive(pid) and info.get("start") is not None and _start_time(pid) == info["start"]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)  # the router leads its own process group
            deadline = time.time() + 5
            while _alive(pid) and _start_time(pid) == info["start"] and time.time() < deadline:
                time.sleep(0.05)
            if _alive(pid) and _start_time(pid) == info["start"]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(pid)
        del routers[pid_text]
    if routers or os.path.exists(path):
        _write_routers(path, routers)
    return stopped


def remove_stale_server_dirs(path=None) -> list:
    """Remove the routers' working folders (`tmp/local_server_N`) an unclean stop left
    behind: Mephisto's deploy fails on an existing one.  Also Mephisto's own default
    location in site-packages, for runs made before this plugin's patches."""
    removed = []
    roots = [os.path.join(path or data_dir(), "tmp")]
    try:
        from mephisto.utils.dirs import get_mephisto_tmp_dir

        roots.append(get_mephisto_tmp_dir())
    except ImportError:  # pragma: no cover - Mephisto not installed
        pass
    for root in roots:
        if not os.path.isdir(root):
            continue
        for name in os.listdir(root):
            if name.startswith("local_server_"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(os.path.join(root, name))
    return removed


def live_launcher(path=None):
    """The pid of another launcher that is running on this data directory now, or None."""
    for info in _read_routers(os.path.join(path or data_dir(), _ROUTERS)).values():
        owner = info.get("owner")
        if owner and owner != os.getpid() and _alive(owner):
            return owner
    return None


def clean_after_unclean_stop(path=None):
    """What a launch does first: (orphaned routers stopped, stale folders removed)."""
    return stop_orphaned_routers(path), remove_stale_server_dirs(path)
