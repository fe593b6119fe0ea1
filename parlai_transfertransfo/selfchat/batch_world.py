"""Many self-chats at once: each speaker acts for all of them in one `batch_act` per turn.

ParlAI's `BatchWorld` drives teacher/student worlds; it never runs a self-chat world's
own turns (personas first, then optional seed messages), and ParlAI 1.7.2's self_chat
refuses `-bs > 1`.  This world keeps every self-chat world's logic and batches only what
costs: the turns where both speakers generate.  Those turns do exactly what
`SelfChatWorld.parley` does, with `agent.act()` for each chat replaced by one
`batch_act` over all chats.
"""
from parlai.core.worlds import BatchWorld, validate


class BatchSelfChatWorld(BatchWorld):
    """`opt['batchsize']` copies of a self-chat world, advanced in lockstep."""

    def __init__(self, opt, world):
        super().__init__(opt, world)
        for copy in self.worlds:  # acts carry the ids self_chat gave the speakers (<id>_1, <id>_2)
            for copy_agent, agent in zip(copy.get_agents(), world.get_agents()):
                copy_agent.id = agent.id
        self.active = self.worlds

    def start_chats(self, n):
        """The next parleys advance only the first `n` copies (a last, partial batch)."""
        if not 1 <= n <= len(self.worlds):
            raise ValueError(f"{n} chats do not fit a batch of {len(self.worlds)}")
        self.active = self.worlds[:n]

    @staticmethod
    def _generating_turn(world):
        """True when the world's next parley is its plain loop: both speakers act."""
        return world.turn_cnt > 0 and not world.episode_done() and not world.seed_utterances

    def parley(self):
        batched = [w for w in self.active if self._generating_turn(w)]
        for w in self.active:
            if w not in batched:  # personas, seed messages, a new episode: the world's own turn
                w.parley()
        if batched:
            self._batched_turn(batched)
        self.acts = [[w.get_acts()[i] for w in self.active] for i in range(2)]
        self.update_counters()

    def _batched_turn(self, worlds):
        for i in range(2):
            agent = self.world.get_agents()[i]
            if hasattr(agent, "batch_act"):
                acts = agent.batch_act([w.get_agents()[i].observation for w in worlds])
                for w, act in zip(worlds, acts):
                    w.get_agents()[i].self_observe(act)
            else:
                acts = [w.get_agents()[i].act() for w in worlds]
            for w, act in zip(worlds, acts):
                w.acts[i] = act
                w.get_agents()[1 - i].observe(validate(act))
        for w in worlds:
            w.update_counters()
            w.turn_cnt += 1

    def display(self):
        n = len(self.active)
        return "\n".join(f"[chat {i + 1} of {n}]\n{w.display()}" for i, w in enumerate(self.active))
