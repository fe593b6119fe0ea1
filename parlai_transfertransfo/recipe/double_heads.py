"""Double heads (next-token LM + next-utterance classification) over three kinds of backbone.

- GPT-2: transformers' `GPT2DoubleHeadsModel` (its `multiple_choice_head`; token types
  through `wte`, as the model does itself).
- OpenAI GPT: `OpenAIGPTDoubleHeadsModel`. It has no KV cache in transformers 5.
- Llama-family causal LMs: the LM plus our own MC head, `nn.Linear(hidden, 1)`, with
  segments added the GPT way: `inputs_embeds = embed(ids) + embed(token_type_ids)`.

Every path runs a shared context once: `recipe_losses` (training and ranking: contexts and
their candidates in packed rows, packed_pass.py, with gradients when training), and
`encode_prefix` / `extend` / `select` (incremental decoding from the KV cache;
`score_candidates`, ranking over that cache, is the previous ranking path).
`forward` runs whole (right-padded) sequences, the recipe's own layout, as a reference.
"""
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe import cached_candidates, decode_step, kv_cache, packed_pass
from parlai_transfertransfo.recipe.architectures import GPT_DOUBLE_HEADS, check_supported
from parlai_transfertransfo.recipe.prefix import Prefix


class DoubleHeads(nn.Module):
    """One interface over GPT, GPT-2 and Llama-family LMs; `self.lm` is the transformers model."""

    def __init__(self, lm):
        super().__init__()
        self.kind = check_supported(lm.config)
        self.candidate_path = "packed"  # or "cached", the previous path (see _candidate_states)
        self.lm = lm
        if self.kind in GPT_DOUBLE_HEADS:
            self.mc_head = None
        else:
            self.mc_head = nn.Linear(lm.config.hidden_size, 1)
            self.mc_head.to(dtype=lm.dtype)

    # --- sizes -------------------------------------------------------------------------
    @property
    def config(self):
        return self.lm.config

    @property
    def max_positions(self) -> int:
        """Longest sequence the position embeddings (or the rotary training length) allow."""
        if self.kind in GPT_DOUBLE_HEADS:
            return self.config.n_positions
        return self.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.lm.get_input_embeddings().weight.shape[0]  # also through peft's wrapper

    def resize_token_embeddings(self, n: int):
        """Grow the (tied) word embeddings for added special tokens; no-op if already n."""
        if n != self.vocab_size:
            self.lm.resize_token_embeddings(n)

    # --- shared machinery ----------------------------------------------------------------
    def _hidden(self, ids, types, mask, positions, cache):
        """Last-layer hidden states [B, T, H] of the backbone body (the LM without its head)."""
        body = self.lm.base_model
        use_cache = cache is not None
        if self.kind == "openai-gpt":
            out = body(
                input_ids=ids, token_type_ids=types, attention_mask=mask, position_ids=positions
            )
        elif self.kind == "gpt2":
            out = body(
                input_ids=ids, token_type_ids=types, attention_mask=mask, position_ids=positions,
                cache=cache, use_cache=use_cache,
            )
        else:
            out = body(
                inputs_embeds=self._embeds(ids, types), attention_mask=mask, position_ids=positions,
                cache=cache, use_cache=use_cache,
            )
        return out.last_hidden_state

    def _embeds(self, ids, types):
        """A Llama-family input: token embedding plus segment embedding (GPT's way)."""
        embed = self.lm.get_input_embeddings()
        return embed(ids) if types is None else embed(ids) + embed(types)

    def _decode_step(self):
        """decode_step.py's step over this backbone when it computes exactly what the body
        does (a plain Llama, inference: eval mode, no autograd), else None. Made once, on
        the first decoding step (with int8 weights, it fuses their projections then)."""
        if torch.is_grad_enabled() or self.lm.training:
            return None
        if not hasattr(self, "_step"):
            self._step = (decode_step.LlamaDecodeStep(self.lm.base_model, self.lm.get_output_embeddings())
                          if decode_step.supports(self.lm) else None)
        return self._step

    def _mc_logits(self, hidden, index):
        """MC logit from hidden [..., T, H] at positions index [...] -> [...]."""
        if self.mc_head is None:  # GPT's own head; bf16 weights (--cpu-dtype) give float32 scores
            logits = self.lm.multiple_choice_head(hidden, index).squeeze(-1)
            return logits if self.lm.dtype == torch.float32 else logits.float()
        gather = index[..., None, None].expand(*index.shape, 1, hidden.size(-1))
        picked = hidden.gather(-2, gather).squeeze(-2)
        return self.mc_head(picked.to(self.mc_head.weight.dtype)).squeeze(-1)  # fp32 head of bf16 weights

    def _lm_logits(self, hidden):
        """Float32 logits from bf16 weights (--cpu-dtype bf16): searches and losses compare
        log-probabilities that bf16 would round to 3 significant digits. fp32 weights, under
        --bf16's autocast too, give what they always gave."""
        logits = self.lm.get_output_embeddings()(hidden)
        return logits if self.lm.dtype == torch.float32 else logits.float()

    # --- training: whole sequences -------------------------------------------------------
    def forward(self, input_ids, token_type_ids=None, mc_token_ids=None, attention_mask=None):
        """(lm_logits [..., T, V], mc_logits [...]) for input_ids [B, C, T] or [B, T].

        Sequences are right-padded; causal attention keeps padding out of every real token's
        view, and mc_token_ids point at each sequence's `<eos>`, before its padding.
        mc_logits is None when mc_token_ids is None.
        """
        shape = input_ids.shape
        flat = input_ids.reshape(-1, shape[-1])
        types = None if token_type_ids is None else token_type_ids.reshape(flat.shape)
        mask = None if attention_mask is None else attention_mask.reshape(flat.shape)
        hidden = self._hidden(flat, types, mask, None, None)
        hidden = hidden.reshape(*shape, hidden.size(-1))
        lm_logits = self._lm_logits(hidden)
        mc_logits = None if mc_token_ids is None else self._mc_logits(hidden, mc_token_ids)
        return lm_logits, mc_logits

    def recipe_losses(self, ids, types, mask, owner, cand_ids, cand_types, cand_lengths, lm_rows,
                      keep_contexts=False, past: Prefix | None = None):
        """The recipe's training step, each context run once: (token_nll, token_argmax, mc_logits).

        The recipe runs every candidate as a whole sequence (persona + history + reply), so
        the context is encoded once per candidate. Here the LEFT-padded contexts ids/types/
        mask [P, S] run once, with gradients, and the right-padded candidates cand_ids/
        cand_types [N, L] (speaker token first, `<eos>` last, cand_lengths [N] real tokens)
        continue their context owner[N]: the same attention, positions and segments as the
        whole sequences, so the same losses and gradients (tested), for a fraction of the
        tokens (see `_candidate_states`). mc_logits [N] is read at each `<eos>`. Ranking
        uses it too, with lm_rows empty.

        The LM head runs only on the candidates lm_rows [G] (the gold replies) and only at
        their labelled positions: token_nll / token_argmax [G, L-1] hold, at t, the loss and
        prediction for cand_ids[g, t+1] (reply words and `<eos>`; 0 and -100 elsewhere).

        keep_contexts=True (inference) adds a 4th result: the contexts' Prefix, each context
        continued by its first candidate's first token (`<speaker1>`, the reply's start):
        what the generator's encoder would compute, copied out of this pass, and the start
        token's hidden state [P, H] (see `_context_prefix`); None where the pass cannot
        give it.

        past (inference): each context's cached start (persona_cache.py), which ids/types/
        mask continue, as in `encode_prefix`.
        """
        states, index, kept = self._candidate_states(ids, types, mask, owner, cand_ids, cand_types, cand_lengths,
                                                     past, keep_contexts)
        last = index.gather(1, (cand_lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        mc_logits = self._mc_logits(states.index_select(0, last.clamp(min=0))[:, None], torch.zeros_like(last))
        targets = cand_ids.index_select(0, lm_rows)[:, 1:]
        gold_index = index.index_select(0, lm_rows)
        where = gold_index[:, 1:].ge(0)
        token_nll = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        token_argmax = torch.full_like(targets, -100)
        if bool(where.any()):  # ranking alone (no gold rows) runs no LM head at all
            logits = self._lm_logits(states.index_select(0, gold_index[:, :-1][where])).float()
            token_nll[where] = F.cross_entropy(logits, targets[where], reduction="none")
            token_argmax[where] = logits.argmax(-1)
        if keep_contexts:
            return token_nll, token_argmax, mc_logits, self._context_prefix(kept, states, mask, past)
        return token_nll, token_argmax, mc_logits

    def _context_prefix(self, kept, states, ctx_mask, past):
        """(Prefix, start hidden [P, H]) of `<cached start> <context> <speaker1>` from the
        packed pass (packed_pass.py): its keys/values and positions; every token had there
        the view and position it has in the encoder's own pass. Its last_logits is left to
        `with_last_logits`, so ranking alone runs no LM head."""
        if kept is None:
            return None
        kv, start = kept
        mask = torch.cat([ctx_mask.long(), torch.ones_like(ctx_mask[:, :1]).long()], 1)
        if past is not None:
            mask = torch.cat([past.mask.long(), mask], 1)
        prefix = Prefix(kv=kv, ids=None, types=None, mask=mask, next_position=mask.sum(1), last_logits=None)
        return prefix, states.index_select(0, start)

    def with_last_logits(self, prefix: Prefix, last_hidden) -> Prefix:
        """`prefix` with the next-token logits of its rows' last hidden states [B, H]."""
        return replace(prefix, last_logits=self._lm_logits(last_hidden))

    def _candidate_states(self, ids, types, mask, owner, cand_ids, cand_types, cand_lengths, past=None,
                          keep_contexts=False):
        """Hidden states of the candidates continuing their contexts: (states [X, H], index
        [N, L], kept), index[i, t] the row of `states` for token t of candidate i (-1: padding).

        "packed" (the default): contexts and candidates in packed rows (packed_pass.py):
        nothing is padded to the longest candidate or context; with keep_contexts, `kept`
        holds the contexts' keys/values for the generator (else None). "cached": the
        previous path, kept selectable for side-by-side benchmarks: the left-padded contexts
        run first, then each context's candidates in one row over its cache, padded to the
        longest such row. OpenAI GPT (no 4D masks, no cache) and sliding-window models (the
        custom mask would lift the window) take the cached path's one row per candidate.
        """
        if self.candidate_path == "packed" and self._packs():
            return packed_pass.candidate_states(self, ids, types, mask, owner, cand_ids, cand_types, cand_lengths,
                                                past, keep_contexts)
        hidden, cand_mask = self._continue(self.encode_prefix(ids, types, mask, past), owner, cand_ids,
                                           cand_types, cand_lengths)
        index = torch.arange(cand_mask.numel(), device=cand_mask.device).view_as(cand_mask)
        return hidden.reshape(-1, hidden.size(-1)), index.masked_fill(~cand_mask.bool(), -1), None

    def _packs(self):
        return self.kind != "openai-gpt" and not getattr(self.config, "sliding_window", None)

    def reuses_prefixes(self):
        """Whether a cached context start can be continued with padding between (no OpenAI
        GPT: no cache; no sliding window: padding columns would count in the window)."""
        return self._packs()

    def _check_positions(self, positions):
        if self.kind in GPT_DOUBLE_HEADS and positions.numel() and int(positions.max()) >= self.max_positions:
            raise TransfertransfoError(
                f"sequence longer than the model's {self.max_positions} positions: "
                "truncate the context"
            )

    # --- inference: a cached prefix ------------------------------------------------------
    def encode_prefix(self, ids, types, mask, past: Prefix | None = None, logits=True) -> Prefix:
        """Run LEFT-padded contexts ids/types/mask [B, P] once and keep their cache.

        Positions are `cumsum(mask) - 1`, so a padded row gets exactly the positions (and,
        with the mask, exactly the attention) it would get alone: scores never depend on
        which other contexts share the batch. With `past` (the cached start of each context,
        persona_cache.py), the contexts continue it. logits=False: no LM head (last_logits
        None), for keys/values that only get continued.
        """
        if past is not None:
            return self._advance(past, ids, types, mask, logits)[1]
        batch = ids.size(0)
        empty = Prefix(
            kv=None,
            ids=ids[:, :0] if self.kind == "openai-gpt" else None,
            types=types[:, :0] if self.kind == "openai-gpt" else None,
            mask=mask[:, :0].long(),
            next_position=torch.zeros(batch, dtype=torch.long, device=ids.device),
            last_logits=None,
        )
        hidden, prefix = self._advance(empty, ids, types, mask, logits)
        return prefix

    def extend(self, prefix: Prefix, ids, types, mask=None):
        """Continue every row of `prefix` with ids/types [B, L] (L=1 for a decoding step).

        Returns (lm_logits [B, L, V], hidden [B, L, H], new_prefix); `prefix` stays usable.
        `mask` [B, L] (default all ones) marks right padding, e.g. of shorter candidates:
        padded tokens are cached but masked, and take no position. types may be None (no
        segment embedding) except for OpenAI GPT, whose Prefix keeps them for re-running.
        """
        if mask is None:
            mask = torch.ones_like(ids)
        hidden, new_prefix = self._advance(prefix, ids, types, mask)
        if ids.size(1) == 1 and bool(mask.all()):  # a decoding step: _advance ran the LM head
            return new_prefix.last_logits[:, None], hidden, new_prefix
        return self._lm_logits(hidden), hidden, new_prefix

    def select(self, prefix: Prefix, indices) -> Prefix:
        """Rows `indices` of `prefix`, repeated or reordered (beam reordering, one context
        expanded to its candidates). A copy: the original prefix is untouched."""
        def pick(t):
            return None if t is None else t.index_select(0, indices)

        kv = None if prefix.kv is None else tuple((pick(k), pick(v)) for k, v in prefix.kv)
        return Prefix(
            kv=kv, ids=pick(prefix.ids), types=pick(prefix.types), mask=pick(prefix.mask),
            next_position=pick(prefix.next_position), last_logits=pick(prefix.last_logits),
        )

    def score_candidates(self, prefix: Prefix, owner, cand_ids, cand_types, cand_lengths, nll=True):
        """(mc_logits [N], token_nll [N, L]) of candidates continuing their cached contexts:
        the previous ranking path (cached_candidates.py)."""
        return cached_candidates.score_candidates(self, prefix, owner, cand_ids, cand_types, cand_lengths, nll)

    def _continue(self, prefix: Prefix, owner, cand_ids, cand_types, cand_lengths):
        return cached_candidates.continue_candidates(self, prefix, owner, cand_ids, cand_types, cand_lengths)

    def _advance(self, prefix: Prefix, ids, types, mask, logits=True):
        """Run ids on top of `prefix`: (hidden [B, L, H], new Prefix); logits=False leaves
        the new Prefix's last_logits None (no LM head)."""
        mask = mask.long()
        positions = prefix.next_position[:, None] + mask.cumsum(1) - 1
        positions = positions.clamp(min=0)
        self._check_positions(positions)
        full_mask = torch.cat([prefix.mask, mask], dim=1)
        lm_head = self._lm_logits
        if self.kind == "openai-gpt":
            # No KV cache in transformers 5's OpenAI GPT: keep the tokens and re-run the
            # whole sequence each call. Correct, but each step costs a full forward.
            all_ids = torch.cat([prefix.ids, ids], dim=1)
            all_types = torch.cat([prefix.types, types], dim=1)
            past_positions = (prefix.mask.cumsum(1) - 1).clamp(min=0)
            all_positions = torch.cat([past_positions, positions], dim=1)
            hidden = self._rerun_packed(all_ids, all_types, full_mask, all_positions)[:, -ids.size(1):]
            kv = None
        elif ids.size(1) == 1 and prefix.kv is not None and self._decode_step():
            all_ids = all_types = None  # a decoding step: the same numbers, less machinery
            hidden, kv = self._step(self._embeds(ids, types), full_mask, positions, prefix.kv)
            lm_head = self._step.lm_head(ids.size(0), lm_head)  # one row: in row blocks
        else:
            all_ids = all_types = None
            cache = self._cache(prefix)
            hidden = self._hidden(ids, types, full_mask, positions, cache)
            kv = tuple((layer.keys, layer.values) for layer in cache.layers)
        # Next-token logits after each row's last real token; rows whose continuation is all
        # padding keep their previous ones.
        lengths = mask.sum(1)
        steps = torch.arange(1, ids.size(1) + 1, device=ids.device)
        last_real = ((mask * steps).max(1).values - 1).clamp(min=0)  # left or right padding
        last = hidden[torch.arange(ids.size(0), device=ids.device), last_real]
        last_logits = lm_head(last) if logits else None
        if logits and prefix.last_logits is not None:
            last_logits = torch.where(lengths[:, None] > 0, last_logits, prefix.last_logits)
        new_prefix = replace(
            prefix, kv=kv, ids=all_ids, types=all_types, mask=full_mask,
            next_position=prefix.next_position + lengths, last_logits=last_logits,
        )
        return hidden, new_prefix

    def _cache(self, prefix: Prefix):
        """The backbone's cache over `prefix`'s keys/values (kv_cache.py: grown in place)."""
        return kv_cache.as_cache(prefix.kv, self.config.num_hidden_layers)

    def _rerun_packed(self, ids, types, mask, positions):
        """Full re-run for OpenAI GPT with each row's real tokens packed to the left: the
        padded width (left-padded context + right-padded continuation) may exceed the
        model's positions although every row fits. Hidden states come back in the
        original layout (garbage at padding)."""
        order = torch.sort(1 - mask, dim=1, stable=True).indices[:, : int(mask.sum(1).max())]
        packed_mask = mask.gather(1, order)
        hidden = self._hidden(
            ids.gather(1, order), types.gather(1, order), packed_mask, positions.gather(1, order), None
        )
        out = hidden.new_zeros(ids.size(0), ids.size(1), hidden.size(-1))
        return out.scatter(1, order[..., None].expand_as(hidden), hidden)
