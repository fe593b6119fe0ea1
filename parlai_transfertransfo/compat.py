"""Every patch that ParlAI 1.7.2 needs on today's stack (torch 2.13, numpy 2, ...).

Nothing here edits site-packages: each patch is a function of the freshly imported ParlAI
module, applied by `registration` right after that module loads (or at once, if it was
loaded before).  Each names the breakage it fixes; tests/test_compat.py shows each one is
needed.  This module imports nothing heavy at top level: it is imported at interpreter
start by the .pth hook.
"""
import contextlib
import copy
import os


def fix_reduce_on_plateau(lr_scheduler):
    """torch >= 2.7 removed `ReduceLROnPlateau(verbose=...)`, which ParlAI's default
    `--lr-scheduler reduceonplateau` passes: `TypeError: ... unexpected keyword argument
    'verbose'` as soon as any agent builds its optimizer."""
    from torch import optim

    def __init__(self, optimizer, patience, decay, warmup_updates, warmup_rate):
        lr_scheduler.ParlAILRScheduler.__init__(self, warmup_updates, warmup_rate)
        self.scheduler = optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, "min", factor=decay, patience=patience
        )

    lr_scheduler.ReduceOnPlateauLRScheduler.__init__ = __init__


def fix_distributed_on_cpu(distributed):
    """ParlAI's `distributed_context` hard-codes the NCCL backend, divides the rank by
    `torch.cuda.device_count()` and calls `torch.cuda.init()`, and `all_gather_list`
    (behind `sync_object`) builds CUDA tensors: `parlai multiprocessing_train` dies with
    ZeroDivisionError on a machine without a GPU.  With no GPU, use the gloo backend and
    torch's CPU object collectives; with GPUs, ParlAI's own code."""
    import torch
    import torch.distributed as dist

    cuda_all_gather_list = distributed.all_gather_list

    def all_gather_list(data):
        if distributed.is_distributed() and dist.get_backend() == "gloo":
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, data)
            return gathered
        return cuda_all_gather_list(data)

    distributed.all_gather_list = all_gather_list

    cuda_context = distributed.distributed_context

    @contextlib.contextmanager
    def distributed_context(rank, opt, rank_offset=0, gpu=None, init_method="tcp://localhost:61337"):
        if torch.cuda.is_available() and not opt.get("no_cuda"):
            with cuda_context(rank, opt, rank_offset, gpu, init_method) as new_opt:
                yield new_opt
            return
        from parlai.utils import logging

        opt = copy.deepcopy(opt)
        rank = rank + rank_offset
        opt["rank"] = rank
        opt["gpu"] = -1
        opt["no_cuda"] = True
        opt.setdefault("override", {})
        opt["override"]["gpu"] = -1
        opt["override"]["no_cuda"] = True
        verbose = opt.get("verbose")
        prefix = "rank:{:3d} |".format(rank) if verbose or rank != 0 else None
        with distributed.override_print(not verbose and rank != 0, prefix):
            dist.init_process_group(
                backend="gloo",
                init_method=init_method,
                world_size=opt["distributed_world_size"],
                rank=rank,
            )
            logging.info("Distributed group initialized (gloo, CPU)")
            torch.manual_seed(42)
            distributed.sync_object(None)
            try:
                yield opt
            finally:
                dist.destroy_process_group()

    distributed.distributed_context = distributed_context


def fix_mp_train_default_world_size(mp_train):
    """`parlai multiprocessing_train` defaults `--distributed-world-size` to
    `torch.cuda.device_count()`, which is 0 without a GPU and makes it spawn -1
    processes; default to 2 CPU workers instead."""
    import torch

    if torch.cuda.is_available():
        return
    setup_args = mp_train.setup_args

    def setup_args_cpu():
        parser = setup_args()
        parser.set_defaults(distributed_world_size=2)
        return parser

    mp_train.setup_args = setup_args_cpu


def fix_ddp_on_cpu(tga):
    """TorchGeneratorAgent wraps its model in DistributedDataParallel with
    `device_ids=[opt['gpu']]`, which is [-1] without a GPU: torch raises "device_ids ...
    only work with ... GPU modules" in every `multiprocessing_train` worker.  CPU modules
    need device_ids=None; pass that while the agent is built on CPU."""
    import torch
    from parlai.utils.distributed import is_distributed

    ddp = torch.nn.parallel.DistributedDataParallel

    class CpuDistributedDataParallel(ddp):
        def __init__(self, module, device_ids=None, *args, **kwargs):
            super().__init__(module, None if device_ids == [-1] else device_ids, *args, **kwargs)

    init = tga.TorchGeneratorAgent.__init__

    def __init__(self, opt, shared=None):
        on_gpu = torch.cuda.is_available() and not opt.get("no_cuda")
        if shared is not None or not is_distributed() or on_gpu:
            return init(self, opt, shared)
        torch.nn.parallel.DistributedDataParallel = CpuDistributedDataParallel
        try:
            init(self, opt, shared)
        finally:
            torch.nn.parallel.DistributedDataParallel = ddp

    tga.TorchGeneratorAgent.__init__ = __init__


def fix_join_device_on_cpu(fsdp):
    """`multiprocessing_train`'s joinable train loop and evaluator report `opt['gpu']` as
    their join device, which is -1 without a GPU: "Device index must not be negative"
    when the workers finish.  Report the CPU instead."""

    def cpu_when_no_gpu(prop):
        return property(lambda self: "cpu" if prop.fget(self) == -1 else prop.fget(self))

    for cls in (fsdp.JoinableTrainLoop, fsdp.JoinableEvaluator):
        cls.join_device = cpu_when_no_gpu(cls.join_device)


def fix_missing_model_file_message(agents):
    """`parlai eval_model` / `interactive` with a `--model-file` that does not exist end
    in a RuntimeError traceback ("WARNING: Model file does not exist"): say it in one
    line instead."""
    create_agent = agents.create_agent

    def create_agent_checked(opt, requireModelExists=False):
        try:
            return create_agent(opt, requireModelExists)
        except RuntimeError as err:
            if "Model file does not exist" not in str(err):
                raise
            raise SystemExit(
                f"parlai: the model file {opt.get('model_file')} does not exist: check "
                "--model-file (zoo models are named like zoo:transfertransfo/<entry>/model)"
            ) from None

    agents.create_agent = create_agent_checked


def guard_convai2_teachers(agents):
    """ParlAI's convai2 teachers retry a download that cannot work offline (~15 s) and
    then raise a traceback; a variant whose file is not installed dies with
    FileNotFoundError.  Both become one line that says how to install the files
    (`parlai install_convai2`)."""
    from parlai_transfertransfo.data.convai2 import guard_convai2_teachers as guard

    guard(agents)


# --- trust: safe loading and resumable training (parlai_transfertransfo/safe_load.py, checkpointing.py)
def safe_opt_files(opt_module):
    """`Opt.load` reads a `.opt` that is not UTF-8 with `pickle.load`: a crafted `.opt` beside
    any model runs code as soon as `parlai interactive -mf` (or the argument parser, which
    reads it to find the agent) opens it; and a `.opt` that is not JSON is a
    JSONDecodeError traceback. JSON stays as it was; an old pickled `.opt` is read with an
    unpickler that builds nothing but dicts and plain values; anything else is one line."""
    import json
    import pickle

    from parlai_transfertransfo.errors import TransfertransfoError

    class OptUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in {("parlai.core.opt", "Opt"), ("parlai.utils.misc", "Opt"),
                                  ("parlai.core.utils", "Opt"), ("collections", "OrderedDict")}:
                return dict
            raise pickle.UnpicklingError(f"it would import {module}.{name}")

    opt_class = opt_module.Opt

    def load(cls, optfile):
        try:
            with open(optfile, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise TransfertransfoError(f"cannot read {optfile}: {e.strerror}") from None
        try:
            dct = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:  # ParlAI's oldest .opt files were pickles
            import io

            try:
                dct = OptUnpickler(io.BytesIO(raw)).load()
            except Exception as e:
                raise TransfertransfoError(
                    f"refusing to read {optfile}: not JSON, and not a plain pickled dict ({e})"
                ) from None
        except ValueError as e:
            raise TransfertransfoError(f"cannot read {optfile}: not JSON ({e})") from None
        if not isinstance(dct, dict):
            raise TransfertransfoError(f"cannot read {optfile}: it holds a {type(dct).__name__}, not options")
        for key in opt_module.__AUTOCLEAN_KEYS__:
            dct.pop(key, None)
        return cls(dct)

    opt_class.load = classmethod(load)


def model_files_that_name_no_agent(agents):
    """A `.opt` without a `model` key (a hand-edited or foreign file) ends in
    `KeyError: 'model'` inside `create_agent_from_opt_file`: say so in one line. Also
    applies `fix_missing_model_file_message`, the other patch of this module."""
    from parlai_transfertransfo.errors import TransfertransfoError

    fix_missing_model_file_message(agents)
    from_opt_file = agents.create_agent_from_opt_file

    def create_agent_from_opt_file(opt):
        optfile = opt["model_file"] + ".opt"
        if os.path.isfile(optfile) and "model" not in agents.Opt.load(optfile) and not opt.get("model"):
            raise TransfertransfoError(f"{optfile} names no agent (no 'model' key): pass -m transfertransfo")
        return from_opt_file(opt)

    agents.create_agent_from_opt_file = create_agent_from_opt_file


def atomic_resumable_train_loop(train_model):
    """ParlAI's TrainLoop writes `.trainstats` in place (a kill mid-write leaves broken JSON
    and the rerun dies in a JSONDecodeError traceback) and after the model file (a kill
    between the two resumes with the update count of one save and the epochs and best
    validation of the previous one). Write it atomically, keep a copy inside each model file
    the agent saves, and resume from that copy (see checkpointing.py)."""
    from parlai_transfertransfo import checkpointing

    loop = train_model.TrainLoop
    init, save_model = loop.__init__, loop.save_model

    def __init__(self, opt):
        init(self, opt)
        checkpointing.resume(self)

    def save_model_with_stats(self, suffix=None):
        agent = getattr(self, "agent", None)
        if agent is not None:
            agent.pending_trainstats = checkpointing.train_stats(self)
        try:
            save_model(self, suffix)
        finally:
            if agent is not None:
                agent.pending_trainstats = None

    def _save_train_stats(self, suffix=None):
        from parlai.utils.distributed import is_primary_worker

        fn = self.opt.get("model_file")
        if not is_primary_worker() or not fn:
            return
        checkpointing.write_json(fn + (suffix or "") + ".trainstats", checkpointing.train_stats(self), indent=4)

    loop.__init__ = __init__
    loop.save_model = save_model_with_stats
    loop._save_train_stats = _save_train_stats


PATCHES = {
    "parlai.nn.lr_scheduler": fix_reduce_on_plateau,
    "parlai.utils.distributed": fix_distributed_on_cpu,
    "parlai.scripts.multiprocessing_train": fix_mp_train_default_world_size,
    "parlai.core.agents": model_files_that_name_no_agent,  # + fix_missing_model_file_message
    "parlai.core.torch_generator_agent": fix_ddp_on_cpu,
    "parlai.utils.fsdp": fix_join_device_on_cpu,
    "parlai.tasks.convai2.agents": guard_convai2_teachers,
    "parlai.core.opt": safe_opt_files,
    "parlai.scripts.train_model": atomic_resumable_train_loop,
}


# --- ecosystem: TensorBoard (-tblog) ----------------------------------------------------------
def fix_tensorboard_logger(logs):
    """`-tblog true` (train_model, eval_model): ParlAI's TensorboardLogger raises an
    ImportError traceback when tensorboardX is missing, and an OSError traceback when its
    log directory cannot be created or written.  Both become one line."""
    init = logs.TensorboardLogger.__init__

    def __init__(self, opt):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise SystemExit(
                "parlai: -tblog true needs TensorBoard: run ./install.sh tensorboard "
                "(or pip install tensorboardX tensorboard)"
            ) from None
        logdir = opt.get("tensorboard_logdir") or f"{opt.get('model_file')}.tensorboard"
        try:
            init(self, opt)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise SystemExit(
                f"parlai: cannot write TensorBoard logs to {logdir} ({reason}): choose another "
                "--tensorboard-logdir"
            ) from None

    logs.TensorboardLogger.__init__ = __init__


PATCHES["parlai.core.logs"] = fix_tensorboard_logger


# ------------------------------------------------------------------ crowdsourcing (Mephisto)
# Mephisto 1.1.1 (the newest on PyPI) and ParlAI's crowdsourcing code on Python 3.11, offline,
# with several runs on one machine.  Used by parlai_transfertransfo/crowdsourcing/.


def _with_default_factories(source, module, fields):
    """`name: T = T()` -> `name: T = field(default_factory=T)` for each (name, T), exactly
    once each: a changed upstream file fails loudly instead of half-patched."""
    for name, cls in fields:
        old = f"{name}: {cls} = {cls}()"
        if source.count(old) != 1:
            raise ImportError(f"compat: {module} no longer reads `{old}`: update compat.py")
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


def fix_parlai_mturk_config_source(source):
    """ParlAI 1.7.2's `parlai/crowdsourcing/utils/mturk.py` declares `mturk: MTurkConfig =
    MTurkConfig()` in a dataclass: on Python 3.11 importing it raises `ValueError: mutable
    default ... use default_factory`, and with it every crowdsourcing task's run script
    config.  Compiled from source with a default factory."""
    return _with_default_factories(
        source, "parlai.crowdsourcing.utils.mturk", [("mturk", "MTurkConfig")]
    )


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


def fix_mephisto_config_at_import(config_handler):
    """`import mephisto` runs `init_config()`, which creates `~/.mephisto/config.yml` in the
    user's home (a write at import time, which fails on a read-only home), and
    `get_config_arg` raises FileNotFoundError when that file is absent.  Create nothing;
    read the file when the user has one (MTurk's `allowed_locales`, a data directory set
    with `mephisto config`), else behave as if it were empty."""
    import os

    read = config_handler.get_config

    def get_config():
        if not os.path.exists(config_handler.DEFAULT_CONFIG_FILE):
            return {}
        return read() or {}

    config_handler.init_config = lambda: None
    config_handler.get_config = get_config


def fix_local_architect_server_dir(local_architect):
    """Mephisto's local architect runs its node router from
    `site-packages/tmp/local_server_<task run id>` and starts it in a new process group:
    run ids restart at 1 in every fresh database, so two runs on one machine (or a run
    after an unclean stop, which leaves the folder behind) collide on the same folder, and
    the router outlives a killed Python process.  Run it under the run's own data
    directory, record its pid there (parlai_transfertransfo.crowdsourcing.environment
    stops a recorded orphan before the next launch) and have the kernel stop it when its
    parent dies."""
    from parlai_transfertransfo.crowdsourcing import environment

    local_architect.get_mephisto_tmp_dir = environment.server_tmp_dir
    deploy = local_architect.LocalArchitect.deploy
    shutdown = local_architect.LocalArchitect.shutdown

    def deploy_isolated(self):
        with environment.router_dies_with_parent(local_architect):
            url = deploy(self)
        environment.record_router(self.server_process_pid)
        return url

    def shutdown_isolated(self):
        try:
            shutdown(self)
        finally:
            environment.forget_router(self.server_process_pid)

    local_architect.LocalArchitect.deploy = deploy_isolated
    local_architect.LocalArchitect.shutdown = shutdown_isolated


def fix_operator_metrics_port(operator):
    """Every Mephisto Operator starts a Prometheus exporter on the fixed port 3031: the
    second run on a machine (other tests, another evaluation) cannot bind it and logs a
    traceback, and the exporter's thread holds the port for the life of the process.
    Nothing scrapes it unless Mephisto's Prometheus/Grafana metrics are installed
    (`mephisto metrics install`); start it only then."""
    start_metrics_server = operator.start_metrics_server

    def start_metrics_server_if_used(args=None):
        from mephisto.utils.metrics import metrics_are_installed

        if metrics_are_installed():
            start_metrics_server(args)

    operator.start_metrics_server = start_metrics_server_if_used


def fix_offensive_language_download(acceptability):
    """ParlAI's `AcceptabilityChecker()` (model_chat's acceptability checks) builds an
    `OffensiveStringMatcher()` that downloads `OffensiveLanguage.txt` from parl.ai when a
    world starts: offline it fails, online it fetches at launch.  Use the word list
    packaged with this plugin (assets/offensive_words.txt) unless a path is given."""
    from parlai_transfertransfo.crowdsourcing.environment import OFFENSIVE_WORDS

    matcher = acceptability.OffensiveStringMatcher

    def packaged_matcher(datapath=None):
        return matcher(datapath if datapath else OFFENSIVE_WORDS)

    acceptability.OffensiveStringMatcher = packaged_matcher


SOURCE_PATCHES = {
    "mephisto.operations.hydra_config": fix_mephisto_hydra_config_source,
    "parlai.crowdsourcing.utils.mturk": fix_parlai_mturk_config_source,
}

PATCHES.update(
    {
        "mephisto.operations.config_handler": fix_mephisto_config_at_import,
        "mephisto.utils.dirs": fix_mephisto_data_dir_prompt,
        "mephisto.abstractions.architects.local_architect": fix_local_architect_server_dir,
        "mephisto.operations.operator": fix_operator_metrics_port,
        "parlai.crowdsourcing.utils.acceptability": fix_offensive_language_download,
    }
)


# ------------------------------------------------------------------ self-chat (issue 12)
def fix_convai2_personas_offline(worlds):
    """ParlAI's convai2 self-chat and interactive worlds take their personas from ConvAI2's
    training file (`train_both_original.txt`), downloading ConvAI2 first: offline,
    `parlai self_chat -t convai2` stops with a download error.  Without the installed file,
    serve the packaged PERSONA-CHAT training personas (the same personas), no download."""
    from parlai_transfertransfo.selfchat.personas import convai2_personas

    parlai_load_personas = worlds._load_personas
    worlds._load_personas = lambda opt: convai2_personas(opt, parlai_load_personas)


def fix_self_chat_script(self_chat):
    """ParlAI 1.7.2's `parlai self_chat` asserts `-bs 1` (an AssertionError traceback for
    any other batch size), dies with AttributeError on a `--partner-model-file` that does not
    exist, and loads the partner outside `--datapath`.  Run it as `selfchat.script` does:
    options checked in one line each, the partner under `--datapath`, `-bs N` chats batched."""
    from parlai_transfertransfo.selfchat.script import self_chat as checked_batched_self_chat

    self_chat.self_chat = checked_batched_self_chat


PATCHES["parlai.tasks.convai2.worlds"] = fix_convai2_personas_offline
PATCHES["parlai.scripts.self_chat"] = fix_self_chat_script
