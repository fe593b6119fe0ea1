"""The dialogue state the recipe needs: the persona and each utterance, as token lists."""
from typing import List

from parlai.core.torch_agent import History

from parlai_transfertransfo.recipe import segments


class RecipeHistory(History):
    """Keeps the persona and the utterances apart, as token lists, instead of one string.

    The first text of an episode carries `your persona:` lines then the partner's first
    utterance; every later text is one partner utterance, every reply one bot utterance.
    """

    def __init__(self, opt, **kwargs):
        super().__init__(opt, **kwargs)
        self.use_partner_persona = opt.get("use_partner_persona", False)
        self.default_persona: List[str] = []
        self.keep = self._utterances_kept(opt)
        self.reset()

    @staticmethod
    def _utterances_kept(opt):
        """How many utterances to remember: the recipe's window (2 * max_history + 1) is all
        the model reads, so a chat of any length holds constant memory. Context blocking
        against the whole dialogue keeps everything, as ParlAI does; --history-size N keeps N."""
        size = opt.get("history_size") or -1
        if opt.get("beam_context_block_ngram", -1) > 0 and opt.get("beam_block_full_context", True):
            return size if size > 0 else None
        window = 2 * max(0, opt.get("max_history", 2)) + 1
        return max(window, size)

    def reset(self):
        super().reset()
        self.persona: List[str] = []
        self.utterances: List[str] = []
        self.persona_vecs: List[List[int]] = []
        self.utterance_vecs: List[List[int]] = []

    def _add_utterance(self, text):
        self.utterances.append(text)
        self.utterance_vecs.append(self.parse(text))
        if self.keep is not None and len(self.utterances) > self.keep:
            del self.utterances[: -self.keep], self.utterance_vecs[: -self.keep]

    def update_history(self, obs, temp_history=None):
        text = obs.get(self.field)
        if text is None:
            return
        persona, partner, lines = segments.split_persona(text)
        if self.use_partner_persona:
            persona = persona + partner
        if persona:
            self.persona = persona
            self.persona_vecs = [self.parse(s) for s in persona]
        elif not self.persona and self.default_persona:
            self.persona = list(self.default_persona)
            self.persona_vecs = [self.parse(s) for s in self.persona]
        for line in lines:
            self._add_utterance(line)
        self.history_strings = self.persona + self.utterances
        self.temp_history = temp_history

    def add_reply(self, text):
        self._add_utterance(text)
        self.history_strings = self.persona + self.utterances

    def get_history_vec(self):
        if not (self.utterance_vecs or self.persona_vecs):
            return None
        return [tok for vec in self.persona_vecs + self.utterance_vecs for tok in vec]
