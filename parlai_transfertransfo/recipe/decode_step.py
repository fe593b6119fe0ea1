"""One decoding step of a Llama backbone, the same operations on the same modules as
transformers' forward, without its per-call machinery.

A decoding step of SmolLM2-135M runs 30 layers of a few small matmuls. transformers' body
wraps each call in mask building, output capture, keyword plumbing and a cache object; on a
CPU that machinery costs about as much as the matmuls of an int8 step (docs/cpu-inference.md,
the profile). This step calls the layers' own norms, projections and MLPs, builds the mask
and the rotary cos/sin once for all layers, and writes the new keys/values in place
(kv_cache.append) - so every number is the one transformers computes, bit for bit
(tests/test_decode_step.py compares them with `torch.equal`). One row with fp32 weights runs
its projections and the LM head as row blocks on every core, where this machine computes
them bit for bit as F.linear does (row_blocks.py).

Only plain Llama configs take it (`supports`): the family's kin differ inside their layers
(q/k norms, multipliers, fused projections, sliding windows) and keep transformers' forward.
"""
import torch
import torch.nn.functional as F

from parlai_transfertransfo.recipe import int8_linear, kv_cache, row_blocks


def supports(lm) -> bool:
    """Whether `lm` (a transformers causal LM) is a plain Llama this step computes exactly."""
    config, body = lm.config, lm.base_model
    rope = getattr(config, "rope_parameters", None) or {}
    return (
        config.model_type == "llama"
        and hasattr(body, "layers") and hasattr(body, "rotary_emb")  # not under a peft wrapper
        and not lm.training
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and rope.get("rope_type", "default") == "default"
        and config.hidden_act == "silu"
        and getattr(config, "pretraining_tp", 1) == 1
        and not getattr(config, "sliding_window", None)
    )


class LlamaDecodeStep:
    """Calling it: (hidden [B, 1, H] after the final norm, new kv) for one token per row.

    embeds [B, 1, H]: the token's (and segment's) embedding; mask [B, S + 1]: 1 on real
    tokens, the new one included; positions [B, 1]; kv: per layer (keys, values)
    [B, kv_heads, S, head_dim], as a Prefix keeps them.
    """

    def __init__(self, body, head=None):
        config = body.config
        self.body = body
        self.layers = list(body.layers[: config.num_hidden_layers])
        attention = self.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.groups = attention.num_key_value_groups
        self.scaling = attention.scaling
        # int8 weights (--cpu-dtype int8): q/k/v and gate/up each fused into one matmul
        self.fused = [(
            int8_linear.Int8Linear.fuse([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
            int8_linear.Int8Linear.fuse([layer.mlp.gate_proj, layer.mlp.up_proj]),
        ) for layer in self.layers]
        # one row (a reply decoded alone), fp32 weights: each product in row blocks on every
        # core where that is F.linear bit for bit on this machine (row_blocks.py)
        self.projections = [_projections(layer) for layer in self.layers]
        split = row_blocks.plan([m for group in self.projections for m in group] + ([head] if head else []))
        self.one_row = [tuple(split.get(id(m), m) for m in group) for group in self.projections] if split else None
        self.head = split.get(id(head))

    def _rotary(self, embeds, positions):
        """cos, sin [B, 1, 1, head_dim]: transformers' rotary embedding, once for all layers."""
        cos, sin = self.body.rotary_emb(embeds, position_ids=positions)
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def __call__(self, embeds, mask, positions, kv):
        batch = embeds.size(0)
        cos, sin = self._rotary(embeds, positions)
        # transformers' mask for one query: none where every column is real, else which are.
        attend = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        x, new_kv = embeds, []
        projections = self.one_row if self._blocks_apply(batch) else self.projections
        for layer, (keys, values), (qkv, gate_up), (q_proj, k_proj, v_proj, o_proj, *mlp) in zip(
                self.layers, kv, self.fused, projections):
            attention = layer.self_attn
            h = layer.input_layernorm(x)
            if qkv is None:
                q, k, v = q_proj(h), k_proj(h), v_proj(h)
            else:
                q, k, v = qkv(h).split([p.out_features for p in (attention.q_proj, attention.k_proj,
                                                                   attention.v_proj)], -1)
            q = q.view(batch, 1, -1, self.head_dim).transpose(1, 2)
            k = k.view(batch, 1, -1, self.head_dim).transpose(1, 2)
            v = v.view(batch, 1, -1, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = kv_cache.append(keys, values, k, v)
            new_kv.append((keys, values))
            out = self._attend(q, keys, values, attend)
            x = x + o_proj(out.reshape(batch, 1, -1).contiguous())
            x = x + self._mlp(layer.mlp, gate_up, *mlp, layer.post_attention_layernorm(x))
        return self.body.norm(x), tuple(new_kv)

    def lm_head(self, rows, default):
        """The LM head for a step of `rows` rows: in row blocks for one row where they are
        exact here, else `default` (the model's own)."""
        return self.head if self.head is not None and self._blocks_apply(rows) else default

    def _blocks_apply(self, rows):
        """Row blocks were checked on one fp32 row; autocast (--bf16 true) multiplies in bf16."""
        return rows == 1 and self.one_row is not None and not torch.is_autocast_enabled("cpu")

    @staticmethod
    def _mlp(mlp, gate_up, gate_proj, up_proj, down_proj, h):
        """transformers' LlamaMLP (down(act(gate(h)) * up(h)), in its order), its gate and up
        projections in one matmul when fused."""
        if gate_up is None:
            return down_proj(mlp.act_fn(gate_proj(h)) * up_proj(h))
        gate, up = gate_up(h).split([mlp.gate_proj.out_features, mlp.up_proj.out_features], -1)
        return down_proj(mlp.act_fn(gate) * up)

    def _attend(self, q, keys, values, attend):
        """transformers' SDPA call for one query token: grouped heads through `enable_gqa`
        without a mask, else the query's heads packed by key/value head."""
        batch, extra = q.size(0), {}
        if self.groups > 1:
            if attend is None:
                extra["enable_gqa"] = True
            else:
                q = q.reshape(batch, q.size(1) // self.groups, self.groups, self.head_dim)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=attend, dropout_p=0.0, scale=self.scaling, is_causal=False, **extra
        )
        out = out.reshape(out.shape[0], -1, 1, values.shape[-1])
        return out.transpose(1, 2).contiguous()


def _projections(layer):
    attention, mlp = layer.self_attn, layer.mlp
    return (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
            mlp.gate_proj, mlp.up_proj, mlp.down_proj)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
