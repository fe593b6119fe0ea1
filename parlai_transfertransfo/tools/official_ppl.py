"""ConvAI2's official word-level perplexity: the protocol of ParlAI's
`projects/convai2/eval_ppl.py`, written here from its description.

One example at a time (the official world runs at batch size 1):
1. the agent observes the example with its labels (and candidates) hidden;
2. the gold reply is split into words with the official dictionary's tokenizer
   (data/official_dict.py: `split`, lowercased);
3. for each word i in the dictionary, `agent.next_word_probability(words[:i])` gives
   {word: score}; the true word's score over the sum of the scores of the dictionary's
   words is its probability (a missing or zero score: an infinite loss); a word not in
   the dictionary is skipped, counted as unknown;
4. the gold reply then joins the agent's history (`self_observe`), as in eval_model.

    ppl = exp(total loss / number of scored words)   ->   "FINAL PPL: x"
"""
import math
import time
from dataclasses import asdict, dataclass

from parlai.core.message import Message

from parlai_transfertransfo.errors import TransfertransfoError

HIDDEN = ("labels", "eval_labels", "label_candidates")


@dataclass
class Totals:
    examples: int = 0
    loss: float = 0.0
    scored_words: int = 0
    unknown_words: int = 0

    @property
    def ppl(self):
        if not self.scored_words:
            return math.nan
        return math.exp(self.loss / self.scored_words) if self.loss < math.inf else math.inf

    def add(self, loss, scored, unknown):
        self.examples += 1
        self.loss += loss
        self.scored_words += scored
        self.unknown_words += unknown


def score_reply(agent, dictionary, reply, keys=None):
    """(loss, scored words, unknown words) of one gold reply, the agent having observed its
    example: the official loop over the reply's words."""
    keys = dictionary.keys() if keys is None else keys
    words = dictionary.tokenize(reply)
    loss, scored, unknown = 0.0, 0, 0
    for i, word in enumerate(words):
        if word not in dictionary:
            unknown += 1
            continue
        probs = agent.next_word_probability(words[:i])
        p = probs.get(word, 0)
        if p > 0:
            loss -= math.log(p / sum(probs.get(k, 0) for k in keys))
        else:
            loss = math.inf
        scored += 1
    return loss, scored, unknown


def evaluate(agent, teacher, dictionary, num_examples=-1, say=print, log_every=10.0):
    """Totals of the official perplexity of `agent` over `teacher`'s examples (all, or the
    first num_examples)."""
    if not hasattr(agent, "next_word_probability"):
        raise TransfertransfoError(f"{type(agent).__name__} has no next_word_probability: ConvAI2's official "
                                   "perplexity needs an agent that gives next-word distributions")
    total = teacher.num_examples() if num_examples is None or num_examples < 0 else min(num_examples,
                                                                                         teacher.num_examples())
    keys = list(dictionary.keys())
    totals, start, last_log = Totals(), time.perf_counter(), time.perf_counter()
    for _ in range(total):
        message = teacher.act()
        labels = message.get("labels", message.get("eval_labels"))
        shown = Message({k: v for k, v in message.items() if k not in HIDDEN})
        agent.observe(shown)
        if labels:
            totals.add(*score_reply(agent, dictionary, labels[0], keys))
        if hasattr(agent, "self_observe"):
            agent.self_observe(Message({"text": labels[0] if labels else "", "episode_done": message.get("episode_done")}))
        if log_every and time.perf_counter() - last_log > log_every:
            last_log = time.perf_counter()
            done = last_log - start
            say(f"official ppl: {totals.examples}/{total} examples, {totals.scored_words} words scored, "
                f"ppl so far {totals.ppl:.4g}, {totals.examples / done:.2f} examples/s")
    seconds = time.perf_counter() - start
    out = asdict(totals)
    out.update(ppl=totals.ppl, seconds=seconds, examples_per_s=totals.examples / seconds if seconds else math.nan)
    return out
