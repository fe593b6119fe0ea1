"""nucleus.py: ParlAI's nucleus sampling without the sort draws the very same tokens, scores
and token details, from the same random numbers, for narrow and wide nuclei."""
import pytest
import torch
from parlai.core.torch_generator_agent import NucleusSampling

from parlai_transfertransfo.agent.nucleus import faster, FIRST_K, TopKNucleusSampling


def logprobs(rows, vocab, temperature, seed):
    """Rows of log-probabilities, peaked (a few likely tokens) to flat (thousands in the nucleus)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * 8 / temperature
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 30.0])  # nuclei from ~1 token to ~10k
@pytest.mark.parametrize("p", [0.3, 0.9])
def test_the_same_draws_as_parlais_nucleus_sampling(temperature, p, monkeypatch):
    ours, parlais = TopKNucleusSampling(p, 4, verbose=True), NucleusSampling(p, 4, verbose=True)
    sorted_steps = []  # steps where ours handed over to ParlAI's sort (ties in the nucleus)
    parlai_select = NucleusSampling.select_paths

    def spy(self, *args):
        sorted_steps.append(type(self) is TopKNucleusSampling)
        return parlai_select(self, *args)

    monkeypatch.setattr(NucleusSampling, "select_paths", spy)
    prior = torch.zeros(4)
    widths = []
    for step in range(25):
        lp = logprobs(4, 49_152, temperature, seed=step)
        torch.manual_seed(100 + step)
        want = parlais.select_paths(lp, prior, step)
        torch.manual_seed(100 + step)
        got = ours.select_paths(lp, prior, step)
        assert torch.equal(got.token_ids, want.token_ids)
        assert torch.equal(got.hypothesis_ids, want.hypothesis_ids)
        assert torch.equal(got.scores, want.scores)
        assert got.token_details == want.token_details
        sprobs = torch.softmax(lp, -1).sort(-1, descending=True).values
        widths.append(int(((sprobs.cumsum(-1) - sprobs) < p).sum(-1).max()))
    if temperature == 30.0:  # near-flat rows: nuclei past the first top-k, ties in them
        assert min(widths) > FIRST_K * 8
    else:  # peaked rows, as a trained model's: (almost) never a sort
        assert sorted_steps.count(False) == 25 and sum(sorted_steps) <= (0 if temperature < 1 else 2)


def test_only_parlais_plain_nucleus_sampling_is_replaced():
    plain = faster(NucleusSampling(0.9, 1))
    assert type(plain) is TopKNucleusSampling and plain.p == 0.9
    other = type("Subclass", (NucleusSampling,), {})(0.9, 1)
    assert type(faster(other)) is not TopKNucleusSampling
