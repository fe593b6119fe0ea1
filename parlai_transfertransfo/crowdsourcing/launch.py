"""Launching a Mephisto task the same way for every crowdsourcing task of this plugin.

    cfg = compose(CONFIG_DIR, "model_chat", sys.argv[1:])     # Hydra overrides, as in ParlAI
    db = prepare(cfg, model_files=[...])                       # preflight + isolated database
    run(db, cfg, shared_state)                                 # until every unit is done

`compose` reads Hydra configs with ParlAI's override syntax (`mephisto/architect=local
mephisto/provider=mock mephisto.blueprint.x=y`) without changing the working directory.
`prepare` fails in one line, before anything starts, on: a config key that does not exist,
a model file that does not exist, a provider whose credentials are missing, a port in use,
pages not built; then it stops what an unclean stop left behind (environment.py).  `run`
owns the Mephisto Operator: SIGINT/SIGTERM end it cleanly and the router is always stopped.
"""
import os
import re
import signal
import socket
import sys

from parlai_transfertransfo.crowdsourcing import environment


class CrowdError(Exception):
    """A problem the user can fix: printed as one line, never a traceback."""


def register_mephisto():
    """Import the Mephisto abstractions whose Hydra groups our configs name."""
    import mephisto.abstractions.architects.local_architect  # noqa: F401
    import mephisto.abstractions.architects.mock_architect  # noqa: F401
    import mephisto.abstractions.providers.mock.mock_provider  # noqa: F401
    import mephisto.abstractions.providers.mturk.mturk_provider  # noqa: F401
    import mephisto.abstractions.providers.mturk_sandbox.sandbox_mturk_provider  # noqa: F401
    import mephisto.operations.hydra_config as hydra_config

    hydra_config.initialize_named_configs()


def compose(config_dir, config_name, overrides):
    """The task's config with the command line's Hydra overrides; one line on a bad one."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_mephisto()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise CrowdError(_one_line_config_error(err)) from None
    return cfg


def _one_line_config_error(err):
    text = str(err)
    key = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' not in", text)
    if key and ("not in struct" in text or "not found" in text or "append to your config" in text):
        return f"unknown config key '{key.group(1)}' (the keys are listed in the task's hydra_configs/conf)"
    group = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if group:
        options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
        choices = ", ".join(o.strip() for o in options.group(1).splitlines()) if options else "?"
        return f"unknown choice {group.group(1)}={group.group(2)} (choose from: {choices})"
    return "bad configuration: " + " ".join(line.strip() for line in text.splitlines() if line.strip())[:300]


# ------------------------------------------------------------------------------ preflight
def check_model_file(path):
    """A model file that exists (zoo: paths name an entry of an installed zoo)."""
    if not path:
        raise CrowdError("no model file: set mephisto.blueprint.model_file=PATH")
    if path.startswith("zoo:"):
        import importlib

        parts = path[len("zoo:"):].split("/")
        if len(parts) < 2:
            raise CrowdError(f"model file {path}: zoo paths look like zoo:transfertransfo/<entry>/model")
        try:
            importlib.import_module(f"parlai.zoo.{parts[0]}.{parts[1]}")
        except ImportError:
            raise CrowdError(f"model file {path} does not exist: no zoo entry {parts[0]}/{parts[1]}") from None
        return
    if not os.path.isfile(path):
        raise CrowdError(f"model file {path} does not exist")


def check_port_free(port, host="localhost"):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            raise CrowdError(f"port {port} is already in use: choose another with mephisto.architect.port=N") from None


def check_provider(cfg):
    """MTurk needs AWS credentials under the requester's name (a ~/.aws profile)."""
    provider = cfg.mephisto.provider._provider_type
    if provider == "mock":
        return
    name = cfg.mephisto.provider.get("requester_name")
    if not name or name == "MOCK_REQUESTER":
        raise CrowdError(f"{provider} needs mephisto.provider.requester_name=NAME (an AWS profile with your MTurk keys)")
    profile = name[: -len("_sandbox")] if name.endswith("_sandbox") else name
    try:
        import boto3
        import botocore.exceptions

        credentials = boto3.Session(profile_name=profile).get_credentials()
    except botocore.exceptions.ProfileNotFound:
        credentials = None
    if credentials is None or not credentials.access_key:
        raise CrowdError(
            f"no AWS credentials for MTurk requester '{name}': add a [{profile}] profile with "
            "aws_access_key_id and aws_secret_access_key to ~/.aws/credentials"
        )


def prepare(cfg, model_files=()):
    """Preflight, then the run's own Mephisto database (what Operator needs)."""
    from parlai_transfertransfo.crowdsourcing.frontend import NotBuilt, check_built

    for path in model_files:
        check_model_file(path)
    check_provider(cfg)
    architect = cfg.mephisto.architect._architect_type
    if architect in ("local", "mock"):
        check_port_free(cfg.mephisto.architect.port)
    if architect == "local":
        try:
            check_built()
        except NotBuilt as err:
            raise CrowdError(str(err)) from None
    data_dir = environment.use_data_dir(cfg.mephisto_data_dir)
    other = environment.live_launcher(data_dir)
    if other is not None:
        raise CrowdError(f"another launch (pid {other}) is running on {data_dir}: set mephisto_data_dir=DIR")
    stopped, removed = environment.clean_after_unclean_stop(data_dir)
    for pid in stopped:
        print(f"stopped an orphaned router (pid {pid}) left by an unclean stop", file=sys.stderr)
    return open_database(cfg, data_dir)


def open_database(cfg, data_dir):
    from mephisto.abstractions.databases.local_singleton_database import MephistoSingletonDB
    from mephisto.utils.testing import get_mock_requester

    db = MephistoSingletonDB(database_path=os.path.join(data_dir, "database.db"))
    provider = cfg.mephisto.provider
    if provider._provider_type == "mock":
        provider.requester_name = get_mock_requester(db).requester_name
    elif not db.find_requesters(requester_name=provider.requester_name):
        db.new_requester(provider.requester_name, provider._provider_type)
    return db


# -------------------------------------------------------------------------------- running
def run(db, cfg, shared_state, log_rate=30, stop=None, on_launched=None):
    """Launch the task run and serve it until every unit is done, SIGINT/SIGTERM, or the
    `stop` event (tests); either way the units are expired and the router is stopped.
    `on_launched(operator)` is called once the task is live."""
    import asyncio
    import threading
    import time

    from mephisto.operations.operator import Operator

    import logging

    logging.getLogger("sh").setLevel(logging.WARNING)  # Mephisto's `rm -rf` calls, at info
    stop = stop or threading.Event()
    operator = Operator(db)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        try:
            operator.launch_task_run_or_die(cfg.mephisto, shared_state=shared_state)
        except (AssertionError, ValueError) as err:
            raise CrowdError(f"cannot launch: {err}") from None
        print_task_url(operator)
        if on_launched is not None:
            on_launched(operator)

        async def serve():
            last_log = time.time()
            while operator.get_running_task_runs() and not stop.is_set():
                if log_rate and time.time() - last_log > log_rate:
                    last_log = time.time()
                    operator.print_run_details()
                await asyncio.sleep(0.2)

        asyncio.set_event_loop(operator._event_loop)
        operator._event_loop.run_until_complete(serve())
    finally:
        if not operator.is_shutdown:
            operator.force_shutdown(timeout=5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return not stop.is_set()


def print_task_url(operator):
    for live_run in operator.get_running_task_runs().values():
        architect = live_run.architect
        if getattr(architect, "ARCHITECT_TYPE", "") == "local":
            print(
                f"workers' page: http://{architect.hostname}:{architect.port}/"
                "?worker_id=WORKER&assignment_id=ASSIGNMENT (mock provider: any names)",
                flush=True,
            )


def main_guard(main, exit_hard=False):
    """Run a command's main(): a CrowdError becomes one line and exit status 1.

    exit_hard: after a launch has shut down (units expired, router stopped, data saved),
    leave at once: Mephisto's websocket channels keep reconnecting to the stopped router
    from non-daemon threads for up to a minute before the interpreter could exit."""

    def guarded(argv=None):
        status = 0
        try:
            main(sys.argv[1:] if argv is None else argv)
        except CrowdError as err:
            sys.stderr.write(f"{err}\n")
            status = 1
        if exit_hard:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        if status:
            raise SystemExit(status)

    return guarded
