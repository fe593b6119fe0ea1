"""`parlai self_chat`, as ParlAI 1.7.2's script runs it, plus what that script lacks.

- `-bs N` runs N chats at a time (`batch_world.BatchSelfChatWorld`); ParlAI asserts `-bs 1`.
- Bad options stop with one line before any model loads: a missing model or partner model
  file, a missing `--partner-opt-file` or `--seed-messages-from-file`, counts below 1.
- The partner model (`--partner-model-file`) resolves `zoo:` paths and loads under this
  run's `--datapath`, as the main model does.

Everything else is ParlAI's: its options (`parlai.scripts.self_chat.setup_args`), agents,
task worlds, `WorldLogger` and its `--outfile` / `--save-format` logs, which ACUTE-Eval
reads.  `plugin/compat/self_chat.py` makes `parlai.scripts.self_chat.self_chat` this module's `self_chat`.
"""
import copy
import json
import os
import random

from parlai_transfertransfo.selfchat.batch_world import BatchSelfChatWorld


def _fail(message):
    raise SystemExit(f"parlai self_chat: {message}")


def _resolve(opt, path, flag):
    """A model file path with `zoo:` resolved (building the zoo model under --datapath)."""
    from parlai.core.build_data import modelzoo_path

    try:
        return modelzoo_path(opt["datapath"], path)
    except ImportError:
        _fail(f"{flag} {path}: no such zoo model (zoo models are named like "
              "zoo:transfertransfo/<entry>/model)")


def check_options(opt):
    """One line per nonsense option, before any model loads."""
    for name, flag in (("batchsize", "-bs"), ("num_self_chats", "--num-self-chats"),
                       ("selfchat_max_turns", "--selfchat-max-turns")):
        value = opt.get(name)
        if value is None or value < 1:
            _fail(f"{flag} must be at least 1 (got {value})")
    if not opt.get("model_file") and not opt.get("model"):
        _fail("no model: give one with -mf MODEL_FILE (or -m MODEL)")
    for name, flag in (("partner_opt_file", "--partner-opt-file"),
                       ("seed_messages_from_file", "--seed-messages-from-file")):
        if opt.get(name) and not os.path.isfile(opt[name]):
            _fail(f"{flag} {opt[name]} does not exist")
    _partner_overrides(opt)  # a malformed --partner-opt-file fails now, not after a model loads
    if opt.get("model_file"):
        path = _resolve(opt, opt["model_file"], "-mf")
        if not os.path.exists(path):  # what ParlAI's create_agent(requireModelExists) needs
            _fail(f"the model file {opt['model_file']} does not exist: check -mf/--model-file")
    if opt.get("partner_model_file"):
        path = _resolve(opt, opt["partner_model_file"], "--partner-model-file")
        if not os.path.isfile(path + ".opt"):
            _fail(f"the partner model file {opt['partner_model_file']} does not exist (no "
                  f"{path}.opt): check --partner-model-file")
        opt["partner_model_file"] = path


def _partner_overrides(opt):
    overrides = {}
    if opt.get("partner_opt_file"):
        try:
            with open(opt["partner_opt_file"], encoding="utf-8") as f:
                overrides = json.load(f)
        except (OSError, ValueError) as err:
            _fail(f"--partner-opt-file {opt['partner_opt_file']}: not a JSON object of options ({err})")
        if not isinstance(overrides, dict):
            _fail(f"--partner-opt-file {opt['partner_opt_file']}: not a JSON object of options")
    overrides["interactive_mode"] = opt.get("interactive_mode", True)
    overrides.setdefault("datapath", opt["datapath"])
    return overrides


def create_speakers(opt):
    """The two speakers: the model and its clone, or the model and the partner model."""
    from parlai.core.agents import create_agent, create_agent_from_model_file

    agent1 = create_agent(opt, requireModelExists=True)
    agent1.opt.log("Agent 1 Opt")
    if opt.get("partner_model_file"):
        agent2 = create_agent_from_model_file(opt["partner_model_file"], _partner_overrides(opt))
        agent2.opt.log("Agent 2 Opt")
    else:
        agent2 = agent1.clone()
    agent1.id = agent1.id + "_1"
    agent2.id = agent2.id + "_2"
    return agent1, agent2


def create_world(opt, agents):
    """The task's self-chat world, wrapped to run `-bs` chats at a time."""
    from parlai.core.worlds import create_task

    task_opt = copy.deepcopy(opt)
    task_opt["batchsize"] = 1  # not ParlAI's BatchWorld: ours batches the self-chat turns
    world = create_task(task_opt, user_agents=list(agents))
    if opt["batchsize"] > 1:
        return BatchSelfChatWorld(opt, world)
    return world


def run_chats(opt, world, logger):
    """`--num-self-chats` chats of `--selfchat-max-turns` parleys, `-bs` at a time, logged;
    with `-d true`, each chat is printed whole when its batch ends."""
    import parlai.utils.logging as logging
    from parlai.utils.misc import TimeLogger

    timer = TimeLogger()
    total, done = opt["num_self_chats"], 0
    while done < total:
        chats = min(opt["batchsize"], total - done)
        if isinstance(world, BatchSelfChatWorld):
            world.start_chats(chats)
            chat_worlds = world.active
        else:
            chat_worlds = [world]
        transcripts = [[] for _ in chat_worlds]
        for _ in range(opt["selfchat_max_turns"]):
            world.parley()
            logger.log(world)
            if opt["display_examples"]:
                for transcript, chat_world in zip(transcripts, chat_worlds):
                    transcript.append(chat_world.display())
        if opt["display_examples"]:
            for transcript in transcripts:
                print("\n".join(transcript) + "\n-- end of episode --")
        world.reset()
        for i in range(chats):  # each chat of the batch ends here: file it
            logger.reset_world(idx=i)
        done += chats
        text, _ = timer.log(done, total, world.report())
        logging.info(text)


def self_chat(opt):
    from parlai.utils.world_logging import WorldLogger

    check_options(opt)
    random.seed(opt["seed"])
    agents = create_speakers(opt)
    world = create_world(opt, agents)
    logger = WorldLogger(opt)
    run_chats(opt, world, logger)

    outfile = opt["outfile"] or f"/tmp/{agents[0].id}_{agents[1].id}_selfchat"
    task_world = world.world if isinstance(world, BatchSelfChatWorld) else world
    if opt["save_format"] == "conversations" and hasattr(task_world, "write"):
        task_world.write(logger, outfile)  # a task world that logs extra context itself
    else:
        logger.write(outfile, world, opt["save_format"])
    return logger.get_logs()
