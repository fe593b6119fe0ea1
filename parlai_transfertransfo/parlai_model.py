"""ParlAI's encoder/decoder interface over a decoder-only DoubleHeads model."""
import torch
from parlai.core.torch_generator_agent import TorchGeneratorModel


class TransfertransfoModel(TorchGeneratorModel):
    """ParlAI's encoder/decoder interface over a decoder-only double-heads model.

    "Encoding" runs the context once and keeps its key/value cache; "decoding" extends
    that cache one token at a time, starting from the reply's `<speaker1>` token.
    """

    def __init__(self, double_heads, special, banned_ids=None):
        super().__init__(
            padding_idx=special.pad, start_idx=special.speaker1, end_idx=special.eos
        )
        self.double_heads = double_heads
        self.special = special
        if banned_ids is None:  # the recipe's control tokens; the agent adds the backbone's
            banned_ids = [special.bos, special.speaker1, special.speaker2, special.pad]
        self.register_buffer("banned_ids", torch.tensor(banned_ids, dtype=torch.long), persistent=False)

    def forward(self, *recipe_batch):
        """Training: contexts + candidates -> (token_nll, token_argmax, mc_logits); see
        `DoubleHeads.recipe_losses`. Through `forward`, so DDP synchronises the gradients."""
        return self.double_heads.recipe_losses(*recipe_batch)

    def encoder(self, ids, types, mask, reply_type):
        return self.double_heads.encode_prefix(ids, types, mask), reply_type

    def reorder_encoder_states(self, encoder_states, indices):
        prefix, reply_type = encoder_states
        if not torch.is_tensor(indices):
            indices = torch.tensor(indices, dtype=torch.long, device=reply_type.device)
        return self.double_heads.select(prefix, indices), reply_type.index_select(0, indices)

    def decoder(self, decoder_input, encoder_states, incr_state=None):
        prefix, reply_type = encoder_states
        if incr_state is None:
            state, tokens = prefix, decoder_input
        else:
            state, tokens = incr_state, decoder_input[:, -1:]
        types = reply_type.unsqueeze(1).expand_as(tokens)
        logits, _, new_state = self.double_heads.extend(state, tokens, types)
        return logits, new_state

    def reorder_decoder_incremental_state(self, incremental_state, inds):
        return self.double_heads.select(incremental_state, inds)

    def output(self, logits):
        """No special token but `<eos>` may ever be generated (`banned_ids`)."""
        logits = logits.clone()
        logits[..., self.banned_ids] = torch.finfo(logits.dtype).min
        return logits
