"""`wppl`: word-level perplexity of the gold reply, comparable across tokenizers.

ParlAI's `ppl` is per token of the backbone's own BPE, so SmolLM2, GPT-2 and OpenAI GPT
give different numbers for the same text. `wppl` divides the same negative log-likelihood,
the probability of the whole reply, by a count every model agrees on: the words of the
lowercased reply as ConvAI2 split them (ParlAI's `DictionaryAgent.split_tokenize`).

    wppl = exp(total NLL of the gold reply's tokens, `<eos>` included / total words)

`<eos>` is in the numerator: the reply is a whole utterance, and the probability of
stopping there is part of the probability of the reply (ppl counts it too). Pooling is
ppl's: a sum metric, total NLL over total words, never a mean of per-example values. A
reply of no words adds its NLL and no words; a report with no words at all gives nan.
"""
import math

from parlai.core.dict import DictionaryAgent
from parlai.core.metrics import AverageMetric


def count_words(reply: str) -> int:
    """Words of a reply as ConvAI2 counted them: `split_tokenize` of the lowercased text."""
    return len(DictionaryAgent.split_tokenize(reply.lower()))


class WordPPLMetric(AverageMetric):
    """exp(numer / denom) with numer a summed NLL and denom a number of words; added
    together exactly as ParlAI's PPLMetric (AverageMetric's sums)."""

    def value(self) -> float:
        if self._denom == 0:  # no words (yet): no per-word likelihood to report
            return float("nan")
        return math.exp(self._numer / self._denom)


def reply_metrics(token_nll, replies, rows_per_reply=1):
    """One WordPPLMetric per row of token_nll [R, T] (0 where no token), the R rows coming
    `rows_per_reply` to each of `replies` (persona rotations of one example)."""
    nll = token_nll.detach().float().sum(-1).tolist()
    words = [count_words(r) for r in replies for _ in range(rows_per_reply)]
    return [WordPPLMetric(n, w) for n, w in zip(nll, words)]
