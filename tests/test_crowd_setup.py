"""The shared Mephisto set-up: each compat patch is needed and works, runs are isolated,
an unclean stop is cleaned up, and bad input fails in one line before anything starts."""
import inspect
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO, free_port
from parlai_transfertransfo.plugin import compat, registration

registration.install()
LAUNCH = [sys.executable, "-m", "parlai_transfertransfo.crowdsourcing.model_chat"]


def mephisto_source(module):
    import importlib.util

    spec = importlib.util.find_spec(module)
    with open(spec.origin) as f:
        return f.read(), spec.origin


# ---------------------------------------------------------------------------------- compat
@pytest.mark.parametrize(
    "module",
    ["mephisto.operations.hydra_config", "parlai.crowdsourcing.utils.mturk"],
)
def test_modules_that_python_3_11_cannot_import_are_compiled_with_default_factories(module):
    import importlib

    source, path = mephisto_source(module)
    # the breakage: as shipped, executing the module fails on a dataclass default
    with pytest.raises(ValueError, match="mutable default"):
        exec(compile(source, path, "exec"), {"__name__": "as_shipped"})
    patched = importlib.import_module(module)
    assert patched.__file__ == path  # the installed file, never a copy
    fixed = compat.SOURCE_PATCHES[module](source)
    assert "field(default_factory=" in fixed and fixed.count("\n") == source.count("\n")


def test_mephisto_configs_get_fresh_defaults():
    from mephisto.operations.hydra_config import MephistoConfig
    from parlai.crowdsourcing.utils.mturk import MTurkRunScriptConfig

    assert MephistoConfig().task is not MephistoConfig().task
    assert MTurkRunScriptConfig().mturk is not MTurkRunScriptConfig().mturk


def test_a_changed_upstream_file_fails_loudly_instead_of_half_patched():
    with pytest.raises(ImportError, match="update plugin/compat"):
        compat.fix_mephisto_hydra_config_source("task: TaskRunArgs = TaskRunArgs(x=1)")


def test_mephisto_never_asks_for_a_data_directory_on_stdin(tmp_path):
    code = "from mephisto.utils.dirs import get_root_data_dir; print(get_root_data_dir())"
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERTRANSFO_MEPHISTO_DIR"}
    env["HOME"] = str(tmp_path)  # no ~/.mephisto/config.yml
    run = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert run.returncode != 0 and "set TRANSFERTRANSFO_MEPHISTO_DIR" in run.stderr
    env["TRANSFERTRANSFO_MEPHISTO_DIR"] = str(tmp_path / "mephisto")
    run = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert run.stdout.strip() == str(tmp_path / "mephisto")
    # the breakage: Mephisto's own function reads stdin (EOF here)
    import mephisto.utils.dirs as dirs

    original = inspect.getclosurevars(dirs.get_root_data_dir).nonlocals["configured"]
    assert "input(" in inspect.getsource(original)


def test_importing_mephisto_writes_nothing_to_the_home_directory(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    code = "import mephisto.operations.operator, mephisto.operations.config_handler as c; print(c.get_config())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "{}", run.stderr[-2000:]
    assert os.listdir(tmp_path) == []
    # the breakage: `import mephisto` calls init_config(), which creates the folder and file
    assert "init_config()" in mephisto_source("mephisto")[0]
    assert "os.mkdir(DEFAULT_CONFIG_FOLDER)" in mephisto_source("mephisto.operations.config_handler")[0]


def test_local_routers_run_inside_the_runs_own_data_directory(tmp_path, monkeypatch):
    import mephisto.abstractions.architects.local_architect as local_architect
    import mephisto.utils.dirs as dirs

    from parlai_transfertransfo.crowdsourcing import environment

    # the breakage: Mephisto's folder is one per installation, shared by every run
    assert dirs.get_mephisto_tmp_dir() == os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(dirs.__file__))), "tmp")
    for name in ("a", "b"):
        monkeypatch.setenv(environment.ENV_VAR, str(tmp_path / name))
        assert local_architect.get_mephisto_tmp_dir() == str(tmp_path / name / "tmp")


def test_the_metrics_exporter_on_the_fixed_port_3031_starts_only_when_metrics_are_installed(monkeypatch):
    import mephisto.operations.operator as operator
    import mephisto.utils.metrics as metrics

    started = []
    monkeypatch.setattr(metrics, "start_http_server", lambda port: started.append(port))
    original = inspect.getclosurevars(operator.start_metrics_server).nonlocals["start_metrics_server"]
    original()  # the breakage: a fixed port, whether anything scrapes it or not
    assert started == [3031]
    started.clear()
    assert not metrics.metrics_are_installed()
    operator.start_metrics_server()
    assert started == []


def test_acceptability_checks_use_the_packaged_word_list_offline(monkeypatch, tmp_path):
    import parlai.core.build_data as build_data
    import parlai.crowdsourcing.utils.acceptability as acceptability

    downloads = []
    monkeypatch.setattr(build_data, "download", lambda url, *a, **k: downloads.append(url) or 1 / 0)
    matcher = inspect.getclosurevars(acceptability.OffensiveStringMatcher).nonlocals["matcher"]
    with pytest.raises(ZeroDivisionError):  # the breakage: it downloads at world start
        matcher(str(tmp_path))
    assert downloads == ["http://parl.ai/downloads/offensive_language/OffensiveLanguage.txt"]
    checker = acceptability.AcceptabilityChecker()
    assert checker.check_messages(["what the hell, you shithead"], False, ["safety"]) == "unsafe:1"
    assert checker.check_messages(["i like my dogs very much"], False, ["safety"]) == ""
    assert len(downloads) == 1


# ----------------------------------------------------------------------- unclean stops
def test_an_orphaned_router_from_a_killed_launch_is_stopped_and_its_folder_removed(tmp_path, monkeypatch):
    from parlai_transfertransfo.crowdsourcing import environment

    monkeypatch.setenv(environment.ENV_VAR, str(tmp_path))
    # a "router" in its own process group, owned by a launcher that is gone
    router = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=os.setpgrp)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(tmp_path / "routers.json", "w") as f:
        json.dump({str(router.pid): {"start": environment._start_time(router.pid), "owner": dead.pid}}, f)
    (tmp_path / "tmp" / "local_server_1" / "server").mkdir(parents=True)
    try:
        stopped, removed = environment.clean_after_unclean_stop(str(tmp_path))
        assert stopped == [router.pid]
        assert router.wait(5) == -signal.SIGTERM
        assert removed[0] == str(tmp_path / "tmp" / "local_server_1")
        assert not (tmp_path / "tmp" / "local_server_1").exists()
        assert json.loads((tmp_path / "routers.json").read_text()) == {}
    finally:
        router.kill()


def test_a_recorded_pid_reused_by_another_program_is_left_alone(tmp_path, monkeypatch):
    from parlai_transfertransfo.crowdsourcing import environment

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(tmp_path / "routers.json", "w") as f:
            json.dump({str(other.pid): {"start": 1, "owner": 1 << 22}}, f)
        assert environment.stop_orphaned_routers(str(tmp_path)) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# ---------------------------------------------------------------------- bad input: one line
def test_a_missing_model_file_fails_in_one_line_on_the_command_line(tmp_path):
    run = subprocess.run(
        [*LAUNCH, f"mephisto_data_dir={tmp_path}", "mephisto.blueprint.model_file=/no/such/model"],
        capture_output=True, text=True, cwd=REPO, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 1
    assert [line for line in run.stderr.splitlines() if line.strip()] == ["model file /no/such/model does not exist"]
    assert os.listdir(tmp_path) == []  # nothing was started or created


def test_bad_input_fails_in_one_line_before_anything_starts(tmp_path, tiny_transfertransfo_model, capsys, monkeypatch):
    from parlai_transfertransfo.crowdsourcing import launch
    from parlai_transfertransfo.crowdsourcing.model_chat import run

    def fails(*overrides):
        with pytest.raises(SystemExit) as exit:
            launch.main_guard(run.main)([f"mephisto_data_dir={tmp_path / 'mephisto'}", *overrides])
        assert exit.value.code == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        return lines[0]

    model = f"mephisto.blueprint.model_file={tiny_transfertransfo_model}"
    assert fails("mephisto.blueprint.model_file=zoo:transfertransfo/nope/model") == (
        "model file zoo:transfertransfo/nope/model does not exist: no zoo entry transfertransfo/nope"
    )
    assert fails() == "no model to evaluate: set mephisto.blueprint.model_file=PATH (zoo: paths too)"
    assert fails(model, "mephisto.blueprint.num_turnz=3") == (
        "unknown config key 'mephisto.blueprint.num_turnz' (the keys are listed in the task's hydra_configs/conf)"
    )
    assert fails(model, "mephisto/architect=nope") == (
        "unknown choice mephisto/architect=nope (choose from: ec2, heroku, local, mock)"
    )
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    assert fails(model, "mephisto/provider=mturk_sandbox", "mephisto.provider.requester_name=me_sandbox") == (
        "no AWS credentials for MTurk requester 'me_sandbox': add a [me] profile "
        "with aws_access_key_id and aws_secret_access_key to ~/.aws/credentials"
    )
    import socket

    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert fails(model, f"mephisto.architect.port={port}") == (
            f"port {port} is already in use: choose another with mephisto.architect.port=N"
        )
    assert not (tmp_path / "mephisto").exists()  # nothing was launched or created


def test_every_crowdsourcing_patch_names_its_breakage():
    crowd = [compat.fix_mephisto_config_at_import, compat.fix_mephisto_data_dir_prompt, compat.fix_local_architect_server_dir,
             compat.fix_operator_metrics_port, compat.fix_offensive_language_download]
    assert all(p in compat.PATCHES.values() for p in crowd)
    for patch in [*crowd, *compat.SOURCE_PATCHES.values()]:
        assert patch.__doc__ and len(patch.__doc__.split()) > 30, patch.__name__


def test_the_frontend_and_router_were_built_at_install_time():
    from parlai_transfertransfo.crowdsourcing import frontend

    frontend.check_built()  # raises with "run ./install.sh crowd" otherwise
    built = os.path.join(frontend.HERE, "model_chat", "frontend", "build")
    assert {"bundle.js", "bundle.css", "index.html"} <= set(os.listdir(built))
    # the page fetches nothing from a CDN
    html = open(os.path.join(built, "index.html")).read()
    assert "http" not in html
    assert os.path.exists(os.path.join(frontend.ROUTER_BUILD, "node_modules", "express"))


def test_the_crowd_extra_leaves_parlais_reports_as_json_lines():
    """pandas (which the crowd extra must not pull in) turns ParlAI's reports into tables."""
    import json

    from parlai.utils.misc import nice_report

    assert json.loads(nice_report({"exs": 3, "loss": 1.5})) == {"exs": 3, "loss": 1.5}
