"""The recipe's two losses and ParlAI's metrics from one pass.

`lm_coef * lm_loss + mc_coef * mc_loss`: the LM loss on the gold reply's tokens (shifted,
as in the recipe), the MC loss a cross-entropy over each example's candidates with the gold
reply last. Evaluation with label candidates takes its ppl from the ranking pass
(ranking.py), so ppl and hits@1 cost one pass.
"""
import torch
import torch.nn.functional as F
from parlai.core.metrics import AverageMetric
from parlai.core.torch_generator_agent import PPLMetric

from parlai_transfertransfo.agent import instances, ranking, word_ppl


def recipe_loss(agent, batch, return_output):
    """TorchGeneratorAgent.compute_loss for the recipe; records ParlAI's metrics per example."""
    with_mc = agent.is_training and agent.opt["mc_coef"] > 0
    gold = ranking.gold_candidates(agent, batch)
    if gold is not None:  # evaluation: ppl and ranking from one pass (see ranking)
        model_inputs = ranking.candidate_inputs(agent, batch)
        # generation follows in eval_step: the pass keeps the contexts for the generator
        token_loss, preds, batch.tt_candidate_scores = ranking.score_candidates(
            agent, model_inputs, gold, keep_contexts=not agent.skip_generation
        )
        gold_rows = torch.tensor(gold, device=token_loss.device)
    else:
        model_inputs, cand_index = instances.recipe_batch(agent, batch, with_mc)
        token_loss, preds, mc_flat = agent.model(*model_inputs)
        gold_rows = model_inputs[7]
    # LM: the gold reply only, shifted as in the recipe
    gold_labels = model_inputs[4].index_select(0, gold_rows)[:, 1:]
    notnull = preds.ne(-100)
    gold_labels = gold_labels.masked_fill(~notnull, -100)
    n_tokens = notnull.long().sum(-1)
    correct = (preds == gold_labels) & notnull
    record = record_per_example(agent, len(gold_rows) // max(1, len(batch.segments)))
    record("loss", AverageMetric.from_mask(token_loss, notnull))
    record("ppl", PPLMetric.from_mask(token_loss, notnull))
    labels = [l[0] if isinstance(l, (list, tuple)) else l for l in batch.labels]
    record("wppl", word_ppl.reply_metrics(token_loss, labels, len(gold_rows) // len(labels)))
    record("token_acc", AverageMetric.from_mask(correct, notnull))
    record("token_em", AverageMetric.many(correct.sum(-1) == n_tokens))
    lm_loss = token_loss.sum() / n_tokens.sum().clamp(min=1)
    loss = agent.opt["lm_coef"] * lm_loss
    if with_mc:  # [R, C] logits, missing distractors masked out, the gold reply last
        present = cand_index.ge(0)
        mc_logits = mc_flat.float()[cand_index.clamp(min=0)]
        mc_logits = mc_logits.masked_fill(~present, torch.finfo(torch.float32).min)
        gold = torch.full((mc_logits.size(0),), mc_logits.size(1) - 1, device=mc_logits.device)
        mc_per_example = F.cross_entropy(mc_logits, gold, reduction="none")
        record("mc_loss", AverageMetric.many(mc_per_example))
        record("mc_acc", AverageMetric.many(mc_logits.argmax(-1) == gold))
        loss = loss + agent.opt["mc_coef"] * mc_per_example.mean()
    if return_output:  # eval_step asks; it reads the logits only for -v / token_losses
        logits = None
        if agent.show_token_details:
            logits = agent._label_logits(model_inputs, gold_rows, batch.label_vec.size(1))  # a hook: -v
        return loss, (logits, preds, None)
    return loss


def label_logits(agent, model_inputs, gold_rows, width):
    """Full LM logits over each gold reply, [B, width, V] aligned with `batch.label_vec`
    (reply + `<eos>`): what ParlAI's `-v` token losses and `--verbose-topk` read. A pass of
    their own (and a [B, T, vocab] tensor), so only verbose evaluation computes them."""
    ids, types, mask, owner, cand_ids, cand_types, lengths = model_inputs[:7]
    heads = agent._double_heads()
    prefix = heads.select(heads.encode_prefix(ids, types, mask), owner.index_select(0, gold_rows))
    steps = torch.arange(cand_ids.size(1), device=cand_ids.device)
    reply_mask = (steps[None, :] < lengths.index_select(0, gold_rows)[:, None]).long()
    logits, _, _ = heads.extend(
        prefix, cand_ids.index_select(0, gold_rows), cand_types.index_select(0, gold_rows), reply_mask
    )
    logits = logits[:, :-1].float()  # position t predicts reply token t
    out = logits.new_zeros(logits.size(0), width, logits.size(-1))
    out[:, : min(width, logits.size(1))] = logits[:, :width]
    return out


def record_per_example(agent, rows_per_example):
    """record_local_metric for rows that come `rows_per_example` to an example (its
    persona rotations, example-major): ParlAI wants one metric per example, so each
    example's rows are summed into one (AverageMetric + AverageMetric pools them)."""
    def record(name, metrics):
        if rows_per_example > 1:
            metrics = [
                sum(metrics[i + 1 : i + rows_per_example], metrics[i])
                for i in range(0, len(metrics), rows_per_example)
            ]
        agent.record_local_metric(name, metrics)

    return record
