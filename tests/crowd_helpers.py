"""Helpers of the crowdsourcing tests: a live-chat task run on Mephisto's mock architect
(in this process, workers played through its mock server, as ParlAI's own crowdsourcing
tests do), and finding the processes a run started."""
import json
import os
import threading
import time

from conftest import free_port

CONVERSATIONS = "conversations.jsonl"


def wait_until(condition, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def saved_conversations(folder):
    path = os.path.join(folder, CONVERSATIONS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MockRun:
    """The live-chat task on the mock architect and mock provider, in a background thread."""

    def __init__(self, data_dir, model_file, shared_models=None, overrides=()):
        from parlai_transfertransfo.crowdsourcing import launch
        from parlai_transfertransfo.crowdsourcing.model_chat import blueprint, run

        self.cfg = run.load_config(
            [
                "mephisto/architect=mock",
                "mephisto.architect.should_run_server=true",
                f"mephisto.architect.port={free_port()}",
                f"mephisto_data_dir={data_dir}",
                f"mephisto.blueprint.model_file={model_file}",
                "mephisto.blueprint.conversations_per_model=1",
                "mephisto.blueprint.num_turns=2",
                *overrides,
            ]
        )
        names = blueprint.model_names(blueprint.listify(self.cfg.mephisto.blueprint.model_file))
        self.db = launch.prepare(self.cfg, list(names.values()))
        self.shared = shared_models or run.load_models(self.cfg, names)
        self.state = run.build_shared_state(self.cfg, self.shared, names)
        self.worlds = []
        make_world = self.state.world_module.make_world

        def recording_make_world(opt, agents):
            world = make_world(opt, agents)
            self.worlds.append(world)
            return world

        self.state.world_module = _ModuleWith(self.state.world_module, make_world=recording_make_world)
        self.folder = self.cfg.mephisto.blueprint.chat_data_folder
        self.stop = threading.Event()
        self.operator = None
        self.finished = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.operator is not None or self.finished is not None, 120, "the task to launch")
        assert self.operator is not None, "the task did not launch"
        self.server = list(self.operator.get_running_task_runs().values())[0].architect.server

    def _run(self):
        from parlai_transfertransfo.crowdsourcing import launch

        def launched(operator):
            self.operator = operator

        try:
            self.finished = launch.run(self.db, self.cfg, self.state, log_rate=0, stop=self.stop, on_launched=launched)
        except BaseException as err:  # surfaced by the test through self.finished
            self.finished = err

    # ------------------------------------------------------------------ playing a worker
    def register(self, name):
        self.server.register_mock_agent(name, f"assignment-{name}")
        return wait_until(lambda: self.db.find_workers(worker_name=f"{name}_sandbox"), 120, f"worker {name}")[0]

    def onboarding_agent(self, worker):
        return wait_until(
            lambda: [a for a in self.db.find_onboarding_agents() if a.worker_id == worker.db_id], 120, "onboarding"
        )[0]

    def onboard(self, worker, answers):
        agent = self.onboarding_agent(worker)
        wait_until(lambda: self._observed(agent, "onboarding"), 120, "the onboarding questions")
        self.server.send_agent_act(agent.get_agent_id(), {"text": "", "task_data": {"onboarding_answers": answers}})
        wait_until(lambda: self._observed(agent, "onboarding_status"), 120, "the onboarding verdict")
        self.server.register_mock_agent_after_onboarding(worker.db_id, agent.get_agent_id(), {"onboarding_data": {}})
        return agent

    def task_agent(self, worker, timeout=120):
        """The worker's agent in a chat, once its world has started (it saw its persona)."""
        agent = wait_until(lambda: [a for a in self.db.find_agents() if a.worker_id == worker.db_id], timeout, "a unit")[-1]
        wait_until(lambda: self._observed(agent, "worker_persona"), timeout, "the chat to start")
        return agent

    @staticmethod
    def _observed(agent, key):
        return [m for m in agent.state.messages if key in (m.get("task_data") or {})]

    @staticmethod
    def last_from(agent, speaker):
        return [m for m in agent.state.messages if m.get("id") == speaker][-1]["text"]

    def say(self, agent, text, task_data=None):
        before = len(agent.state.messages)
        self.server.send_agent_act(agent.get_agent_id(), {"text": text, "task_data": task_data or {}})
        # the world's answer: the partner's reply or the coordinator's refusal
        wait_until(
            lambda: any(m.get("id") in ("Partner", "Coordinator") for m in agent.state.messages[before:]),
            120,
            f"an answer to {text!r}",
        )

    def shutdown(self):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the task run did not shut down"


class _ModuleWith:
    """A world module with some functions replaced (to observe the worlds it makes)."""

    def __init__(self, module, **replaced):
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced.get(name) or getattr(self._module, name)


def stop_if_running(process):
    """A launch a failed test left running is killed and reaped (the test then checks that
    nothing it started survives)."""
    if process.poll() is None:
        process.kill()
        process.wait()


def descendants(pid):
    """Every live process whose ancestry leads to pid (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def processes_in(folder):
    """Live processes whose working directory is inside folder (a run's node router)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(folder)):
                found.append(int(entry))
    return found
