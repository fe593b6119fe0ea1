"""TransfertransfoAgent: the TransferTransfo recipe as a ParlAI TorchGeneratorAgent.

The recipe: segments (recipe/segments.py) -> double-heads model (recipe/double_heads.py)
-> lm_loss + mc_loss (losses.py) -> ranking (ranking.py) and incremental decoding from a
cached prefix (model.py). This class keeps ParlAI's hooks; each does one step by calling
those modules. ParlAI supplies the rest: training loop, optimizers, metrics, beam/nucleus
search.
"""
import contextlib
import os
import random

import torch
from parlai.core.torch_generator_agent import TorchGeneratorAgent

from parlai_transfertransfo.agent import (
    checkpointing, cpu_inference, instances, losses, next_word, nucleus, option_checks, options, ranking,
)
from parlai_transfertransfo.agent.dictionary import TransfertransfoDictionaryAgent
from parlai_transfertransfo.agent.history import RecipeHistory
from parlai_transfertransfo.agent.model import TransfertransfoModel
from parlai_transfertransfo.data import personas
from parlai_transfertransfo.recipe import persona_cache, segments
from parlai_transfertransfo.recipe.prefix import left_pad
from parlai_transfertransfo.weights import backbones, lora, safe_load


class TransfertransfoAgent(TorchGeneratorAgent):
    """TransferTransfo: persona + history -> reply, trained with LM + MC losses."""

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        return options.add_cmdline_args(parser)

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
        if not shared:  # the weights are loaded: put them in --cpu-dtype's format, once
            cpu_inference.apply(self)
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
        if not arg:
            return list(personas.DEFAULT_PERSONA)
        if arg.strip() == "random":
            return personas.random_persona(self.rng)
        return personas.parse_persona_arg(arg)

    def _set_text_vec(self, obs, history, truncate):
        if "text" not in obs or not (history.utterance_vecs or history.persona_vecs):
            return obs  # a persona alone is enough: the bot opens (self-chat's first turn)
        replies = self.dict.txt2vecs(list(obs.get("labels", obs.get("eval_labels", []))))
        if "labels" not in obs and obs.get("label_candidates"):  # ranked at evaluation
            obs["tt_cand_vecs"] = self.dict.txt2vecs(list(obs["label_candidates"]))
            replies = replies + obs["tt_cand_vecs"]
        budget = max([self.reply_max_tokens] + [len(r) for r in replies]) + 1
        persona, utterances = instances.context_segments(self, history, budget)
        if "labels" in obs:  # training: the recipe's instances, built here (in --num-workers' workers)
            obs["tt_instances"] = instances.observed_instances(self, obs, persona, utterances, replies)
        ids, types, reply_type = segments.build_prefix(persona, utterances, self.special)
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
        batch.tt_instances = [o.get("tt_instances") for o in valid]
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

    def _recipe_batch(self, batch, with_distractors):
        """The recipe's instances of a training batch (instances.py)."""
        return instances.recipe_batch(self, batch, with_distractors)

    def compute_loss(self, batch, return_output=False):
        if batch.label_vec is None:
            raise ValueError("Cannot compute loss without a label.")
        with self._autocast():  # train_step's backward then runs outside it, as it should
            return losses.recipe_loss(self, batch, return_output)

    def _label_logits(self, model_inputs, gold_rows, width):
        """Full LM logits over the gold replies, for -v (losses.py)."""
        return losses.label_logits(self, model_inputs, gold_rows, width)

    # ------------------------------------------------------------- ranking
    def rank_eval_label_candidates(self, batch, batchsize):
        """Rank label candidates by the MC head (or --rank-by lm), each scored as a
        continuation of one cached context (the context is encoded once, not once per
        candidate). When eval_step's compute_loss already scored them (the gold label is a
        candidate), its scores are reused: one pass gives ppl and hits@1."""
        return ranking.rank(self, batch)

    # ---------------------------------------------- official ConvAI2 perplexity
    def next_word_probability(self, partial_out):
        """{word: probability} of the word after `partial_out` (a list of words), over
        ConvAI2's official dictionary: the interface of its word-level perplexity
        (`--official-ppl prefix|exact`, next_word.py)."""
        return next_word.next_word_probability(self, partial_out)
