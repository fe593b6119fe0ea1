"""What `parlai eval_model` reports, computed here in-process, example by example, so that a
test can check a command line's numbers against a model it holds."""
import math

from conftest import teacher


def evaluate(agent, *task_args, num_examples=None):
    """{"exs", "hits@1", "hits@5", "hits@10", "ppl"} of `agent` on the teacher that
    `task_args` (-t ... -dt ...) name: hits@k from the gold reply's place among each
    reply's ranked candidates, ppl from the gold replies' summed token losses, as ParlAI
    pools them."""
    from parlai.core.message import Message

    examples = teacher(*map(str, task_args))
    n = examples.num_examples() if num_examples is None else num_examples
    hits, nll, tokens = {1: 0, 5: 0, 10: 0}, 0.0, 0
    for _ in range(n):
        message = dict(examples.act())
        reply = agent.batch_act([agent.observe(Message(message))])[0]
        agent.self_observe(reply)
        for k in hits:
            hits[k] += message["eval_labels"][0] in reply["text_candidates"][:k]
        nll, tokens = nll + float(reply["metrics"]["loss"]._numer), tokens + int(reply["metrics"]["loss"]._denom)
    return {"exs": n, **{f"hits@{k}": h / n for k, h in hits.items()}, "ppl": math.exp(nll / tokens)}
