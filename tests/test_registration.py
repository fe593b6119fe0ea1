"""ParlAI finds our agent, zoo entries, tasks and scripts by their short names: in a fresh
interpreter (the .pth hook), in spawned workers, and from a non-editable install."""
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

PY = sys.executable
TASKS = sorted(
    os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(REPO, "tasks", "*", "agents.py"))
)
ZOO_ENTRIES = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, "zoo", "transfertransfo", "*.py"))
    if not p.endswith("__init__.py")
)

RESOLVE = """
from parlai.core.loader import load_agent_module, load_teacher_module
import importlib, sys
agent = load_agent_module('transfertransfo')
print('agent', agent.__module__, agent.__name__)
for task in sys.argv[1].split(',') if sys.argv[1] else []:
    print('task', task, load_teacher_module(task).__name__)
for entry in sys.argv[2].split(',') if sys.argv[2] else []:
    module = importlib.import_module('parlai.zoo.transfertransfo.' + entry)
    print('zoo', entry, callable(module.download))
"""


def run(args, cwd=REPO, python=PY, env=None):
    return subprocess.run(
        [python, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def _check_resolution(out):
    assert "agent parlai_transfertransfo.agent.transfertransfo TransfertransfoAgent" in out
    for task in TASKS:
        assert f"task {task} " in out
    for entry in ZOO_ENTRIES:
        assert f"zoo {entry} True" in out


def test_fresh_interpreter_resolves_agent_tasks_and_zoo(tmp_path):
    # no flags, no environment variables, not even the repository as working directory
    proc = run(["-c", RESOLVE, ",".join(TASKS), ",".join(ZOO_ENTRIES)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_resolution(proc.stdout)


def test_spawned_worker_resolves_the_agent(tmp_path):
    # `parlai multiprocessing_train` starts its workers with the spawn start method
    code = (
        "import multiprocessing as mp, importlib\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=importlib.import_module,\n"
        "        args=('parlai.agents.transfertransfo.transfertransfo',))\n"
        "    p.start(); p.join(); print('exit', p.exitcode)\n"
    )
    script = tmp_path / "spawn_check.py"
    script.write_text(code)
    proc = run([str(script)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exit 0" in proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # from a copy of the sources: a build/ folder left in the checkout could carry stale files
    src = tmp_path_factory.mktemp("src") / "repo"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "*.egg-info", "__pycache__", ".pytest_cache"))
    proc = run(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = glob.glob(str(out / "*.whl"))
    return path


def test_wheel_carries_the_hook_zoo_and_tasks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "parlai_transfertransfo.pth" in names
    assert "parlai_transfertransfo/zoo/transfertransfo/__init__.py" in names
    assert "parlai_transfertransfo/plugin/agents/transfertransfo/transfertransfo.py" in names
    for task in TASKS:
        assert f"parlai_transfertransfo/tasks/{task}/agents.py" in names


def test_non_editable_install_resolves_everything(wheel, tmp_path):
    """`pip install .`: a fresh venv whose only path to our code is the installed wheel."""
    venv = tmp_path / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = glob.glob(str(venv / "lib" / "python3*" / "site-packages"))[0]
    deps = [p for p in sys.path if p.endswith("site-packages")]
    # torch, parlai, transformers come from the project's .venv, as plain paths: its
    # editable-install hooks (.pth files) are not processed there
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    proc = run(["-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel])
    assert proc.returncode == 0, proc.stderr[-3000:]
    python = str(venv / "bin" / "python")
    where = run(["-c", "import parlai_transfertransfo as p; print(p.__file__)"], cwd=tmp_path, python=python)
    assert where.stdout.startswith(site), where.stdout + where.stderr
    proc = run(["-c", RESOLVE, ",".join(TASKS), ",".join(ZOO_ENTRIES)], cwd=tmp_path, python=python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_resolution(proc.stdout)
