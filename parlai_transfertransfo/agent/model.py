"""ParlAI's encoder/decoder interface over a decoder-only DoubleHeads model."""
import torch
from parlai.core.torch_generator_agent import TorchGeneratorModel

from parlai_transfertransfo.recipe.packing import first_candidates


class TransfertransfoModel(TorchGeneratorModel):
    """ParlAI's encoder/decoder interface over a decoder-only double-heads model.

    "Encoding" runs the context and the reply's `<speaker1>` token in one pass and keeps
    their key/value cache; "decoding" extends that cache one token at a time.
    """

    def __init__(self, double_heads, special, banned_ids, persona_cache=None):
        super().__init__(
            padding_idx=special.pad, start_idx=special.speaker1, end_idx=special.eos
        )
        self.double_heads = double_heads
        self.special = special
        self.register_buffer("banned_ids", torch.tensor(banned_ids, dtype=torch.long), persistent=False)
        # each chat's `<bos> + persona` keys/values, reused by its later turns (inference
        # only); None: every context runs whole
        self.persona_cache = persona_cache
        # evaluation: the contexts the last ranking pass ran, kept for the encoder (below)
        self.ranked_contexts = None

    def forward(self, *recipe_batch, keep_contexts=False):
        """Training: contexts + candidates -> (token_nll, token_argmax, mc_logits); see
        `DoubleHeads.recipe_losses`. Through `forward`, so DDP synchronises the gradients.

        Inference: each context's persona start comes from the persona cache, and the pass
        runs the rest. With keep_contexts (`eval_step` ranks the candidates, then generates
        a reply to the very same contexts), the pass also keeps the contexts' keys/values,
        and the encoder continues them instead of running them a second time."""
        self.ranked_contexts = None
        if not self._inference():
            return self.double_heads.recipe_losses(*recipe_batch)
        ids, types, mask = recipe_batch[:3]
        past, rest = None, (ids, types, mask)
        if self._reuses_personas():
            past, rest = self.persona_cache.split(self.double_heads, ids, types, mask, self._persona_length)
        out = self.double_heads.recipe_losses(*rest, *recipe_batch[3:], keep_contexts=keep_contexts, past=past)
        if not keep_contexts:
            return out
        *out, prefix = out
        if prefix is not None:  # None where the pass keeps nothing (the cached path, OpenAI GPT)
            owner, cand_ids, cand_types = recipe_batch[3:6]
            first = first_candidates(owner, ids.size(0))
            starts = (cand_ids.index_select(0, first)[:, 0], cand_types.index_select(0, first)[:, 0])
            self.ranked_contexts = (ids, types, mask, starts, prefix)
        return tuple(out)

    def encoder(self, ids, types, mask, reply_type):
        """Contexts (left-padded) + `<speaker1>`, the decoder's start token, in one pass: the
        prefix's last logits are then decoding step 0's output (one model call fewer).
        Contexts that the ranking pass just ran (the same tensors) are taken from it."""
        ranked = self._ranked(ids, types, mask, reply_type)
        if ranked is not None:
            return ranked, reply_type
        start = torch.full_like(ids[:, :1], self.START_IDX)
        ids = torch.cat([ids, start], 1)
        types = torch.cat([types, reply_type[:, None].to(types.dtype)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        if self._reuses_personas():
            return self.persona_cache.encode(self.double_heads, ids, types, mask, self._persona_length), reply_type
        return self.double_heads.encode_prefix(ids, types, mask), reply_type

    def _ranked(self, ids, types, mask, reply_type):
        """The ranking pass's Prefix of exactly these contexts and start tokens, once."""
        ranked, self.ranked_contexts = self.ranked_contexts, None
        if ranked is None or not (ranked[0] is ids and ranked[1] is types and ranked[2] is mask):
            return None
        start_ids, start_types = ranked[3]
        if not (bool(start_ids.eq(self.START_IDX).all()) and torch.equal(start_types, reply_type.to(start_types))):
            return None
        prefix, start_hidden = ranked[4]
        return self.double_heads.with_last_logits(prefix, start_hidden)

    def _inference(self):
        """No dropout, no gradients: keys/values computed now are what later passes compute."""
        return not self.training and not torch.is_grad_enabled()

    def _reuses_personas(self):
        """Inference only, and only where a cached start can be continued across padding
        (recipe.double_heads.DoubleHeads.reuses_prefixes)."""
        return self.persona_cache is not None and self._inference() and self.double_heads.reuses_prefixes()

    def _persona_length(self, ids):
        """Tokens of `<bos> + persona` at the start of a context: up to its first speaker token."""
        if not ids or ids[0] != self.special.bos:
            return 0
        speakers = (self.special.speaker1, self.special.speaker2)
        return next((i for i, t in enumerate(ids) if t in speakers), len(ids))

    def reorder_encoder_states(self, encoder_states, indices):
        prefix, reply_type = encoder_states
        if not torch.is_tensor(indices):
            indices = torch.tensor(indices, dtype=torch.long, device=reply_type.device)
        return self.double_heads.select(prefix, indices), reply_type.index_select(0, indices)

    def decoder(self, decoder_input, encoder_states, incr_state=None):
        prefix, reply_type = encoder_states
        if incr_state is not None:
            return self._extend(incr_state, decoder_input[:, -1:], reply_type)
        first = prefix.last_logits[:, None]  # step 0: the start token already ran in `encoder`
        if decoder_input.size(1) == 1:
            return first, prefix
        logits, state = self._extend(prefix, decoder_input[:, 1:], reply_type)
        return torch.cat([first, logits], 1), state

    def _extend(self, state, tokens, reply_type):
        types = reply_type.unsqueeze(1).expand_as(tokens)
        logits, _, new_state = self.double_heads.extend(state, tokens, types)
        return logits, new_state

    def reorder_decoder_incremental_state(self, incremental_state, inds):
        if len(inds) == len(incremental_state) and torch.equal(
            inds.cpu(), torch.arange(len(inds))
        ):  # greedy search keeps every row in place: no copy of the cache
            return incremental_state
        return self.double_heads.select(incremental_state, inds)

    def output(self, logits):
        """No special token but `<eos>` may ever be generated (`banned_ids`)."""
        logits = logits.clone()
        logits[..., self.banned_ids] = torch.finfo(logits.dtype).min
        return logits
