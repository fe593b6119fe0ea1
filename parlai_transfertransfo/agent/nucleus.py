"""ParlAI's nucleus (top-p) sampling, drawing the same tokens, without sorting the vocabulary.

ParlAI's `NucleusSampling` sorts each row's probabilities (the whole vocabulary, ~50k) at
every step to find the nucleus: the most probable tokens whose mass reaches p. On a CPU
that sort is ~5 ms a row, 7% of a full ConvAI2 evaluation. Here `topk` finds the top k
(64, or more while the nucleus has not closed inside them), every later token is masked
as ParlAI masks it, and `torch.multinomial` draws from a tensor elementwise equal to
ParlAI's: the same random numbers, the same choice (tests/test_nucleus.py). Tokens of
exactly equal probability inside the nucleus (rare but for near-flat rows) are ordered by
how ParlAI's unstable sort handles the whole row, so such a step runs ParlAI's own code.
"""
import torch
from parlai.core.torch_generator_agent import NucleusSampling, _PathSelection

FIRST_K = 64


class TopKNucleusSampling(NucleusSampling):
    """NucleusSampling.select_paths over the top k instead of the sorted vocabulary."""

    def select_paths(self, logprobs, prior_scores, current_length):
        probs = torch.softmax(logprobs, dim=-1)
        vocab = probs.size(-1)
        k = min(FIRST_K, vocab)
        while True:
            sprobs, sinds = probs.topk(k, dim=-1)  # sorted, most probable first
            mask = self.get_mask(sprobs)  # ParlAI's: exclusive cumulative mass >= p
            # the mass only grows: once the last of the k is masked, so is every later token
            if k == vocab or bool(mask[:, -1].all()):
                break
            k = min(vocab, k * 8)
        if bool(((sprobs[:, 1:] == sprobs[:, :-1]) & ~mask[:, 1:]).any()):
            # tokens of equal probability inside the nucleus: their order (which token a
            # draw lands on) is whatever ParlAI's sort makes of the whole row, so sort it
            return super().select_paths(logprobs, prior_scores, current_length)
        trunc_sprobs = torch.zeros_like(probs)  # ParlAI's sorted row, masked: zeros past k
        trunc_sprobs[:, :k] = sprobs.masked_fill(mask, 0)
        trunc_sprobs.div_(trunc_sprobs.sum(dim=-1).unsqueeze(1))
        choices = torch.multinomial(trunc_sprobs, 1)[:, 0]
        hyp_ids = torch.arange(logprobs.size(0)).to(logprobs.device)
        tok_ids = sinds[hyp_ids, choices]
        self.update_p(tok_ids)
        scores = trunc_sprobs[hyp_ids, choices].log()
        best_scores = prior_scores.expand_as(scores) + scores
        token_details = None
        if self.verbose:
            tok_logprobs = sprobs[hyp_ids, choices].log().view(-1).cpu().numpy()
            token_details = [{"token_logprob": lp, "token_rank": int(rank)}
                             for lp, rank in zip(tok_logprobs, choices.view(-1).cpu().numpy())]
        return _PathSelection(hypothesis_ids=hyp_ids, token_ids=tok_ids, scores=best_scores,
                              token_details=token_details)


def faster(search):
    """`search` itself, as TopKNucleusSampling when it is ParlAI's plain NucleusSampling
    (built by ParlAI's own factory, with all of its settings)."""
    if type(search) is NucleusSampling:
        search.__class__ = TopKNucleusSampling
    return search
