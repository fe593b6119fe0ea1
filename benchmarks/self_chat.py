"""P8 `parlai self_chat -bs N`: N chats in the time of how many single chats?

Three sides, each the chat loop of `parlai self_chat` (models loaded once, untimed): one
chat at `-bs 1`, N chats at `-bs 1`, N chats at `-bs N`.  Greedy decoding and the same N
persona pairs (drawn with a fixed seed) on every side, so the sides say the same things;
the check reports how many utterances of the batched run equal the unbatched ones
(float32 batched and single matmuls may round differently, and one flipped token
changes the rest of that chat).  On CPU the times are this process's CPU seconds (wall
times come too): on cores shared with other work, wall time mostly measures the neighbours.
"""
import copy
import random
import time


def _args(model_file, device, turns):
    from parlai.scripts.self_chat import setup_args

    return setup_args().parse_args([
        "-mf", model_file, "-t", "convai2", "--selfchat-max-turns", str(turns),
        "--inference", "greedy", "-d", "false",
    ] + (["--no-cuda"] if device == "cpu" else []))


def _cpu_timed(fn, cpu, name):
    """fn, recording the CPU seconds this process spends in it under cpu[name]: on a CPU
    shared with other work, wall time mostly measures the neighbours."""
    def timed():
        start = time.process_time()
        fn()
        cpu.setdefault(name, []).append(time.process_time() - start)
    return timed


def run(model_file, device, reps, chats=8, turns=4, seed=0):
    import parlai.tasks.convai2.worlds as convai2_worlds
    from parlai.utils.world_logging import WorldLogger

    from benchmarks import common
    from parlai_transfertransfo.selfchat import script

    opt = _args(model_file, device, turns)
    script.check_options(opt)
    agents = script.create_speakers(opt)
    parlai_get_contexts = convai2_worlds.SelfChatWorld.get_contexts

    def side(n, batchsize):
        def chat():
            side_opt = copy.deepcopy(opt)
            side_opt["num_self_chats"], side_opt["batchsize"] = n, batchsize
            rng = random.Random(seed)  # the same persona pairs, in the same order, on every side
            convai2_worlds.SelfChatWorld.get_contexts = lambda world: rng.sample(world.personas_list, 2)
            try:
                for agent in agents:
                    agent.reset()
                logger = WorldLogger(side_opt)
                script.run_chats(side_opt, script.create_world(side_opt, agents), logger)
            finally:
                convai2_worlds.SelfChatWorld.get_contexts = parlai_get_contexts
            logs[n, batchsize] = [
                [act["text"] for pair in episode for act in pair if act.get("id") != "context"]
                for episode in logger.get_logs() if episode
            ]
        return chat

    logs, cpu = {}, {}
    names = {"1 chat, -bs 1": (1, 1), f"{chats} chats, -bs 1": (chats, 1),
             f"{chats} chats, -bs {chats}": (chats, chats)}
    sides = {name: side(*cfg) for name, cfg in names.items()}
    wall = common.interleaved({name: _cpu_timed(fn, cpu, name) for name, fn in sides.items()}, reps, device)
    single, batched = logs[chats, 1], logs[chats, chats]
    same = sum(a == b for x, y in zip(single, batched) for a, b in zip(x, y))
    return {
        "times": cpu if device == "cpu" else wall,
        "wall": wall,
        "utterances": sum(map(len, single)),
        "same_utterances": same,
        "first_chat": batched[0],
    }
