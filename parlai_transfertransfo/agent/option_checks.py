"""Options out of range are refused in one line before anything is built.

ParlAI checks few of them: `--temperature 0` dies in an AssertionError traceback,
`--topp 2` silently samples from everything, `--num-candidates 0` or `--max-history -1`
quietly train or chat on something else than asked. Where a value could mean two things,
it is refused with what is allowed, rather than guessed.
"""
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe import cpu_dtype

# option -> (lowest allowed, how to say it); None values are ParlAI's "not set"
AT_LEAST = {
    "num_candidates": (1, "at least 1 (the gold reply; more adds distractors)"),
    "max_history": (0, "0 or more exchanges of history"),
    "lora_rank": (0, "0 (full fine-tuning) or a positive rank"),
    "personality_permutations": (1, "at least 1"),
    "lm_coef": (0, "0 or more"),
    "mc_coef": (0, "0 or more"),
    "beam_size": (1, "at least 1"),
    "topk": (1, "at least 1"),
    "beam_min_length": (0, "0 or more"),
    "label_truncate": (1, "at least 1 token"),
    "text_truncate": (1, "at least 1 token"),
    "truncate": (1, "at least 1 token"),
    "persona_cache_mib": (0, "0 (off) or more MiB"),
}
POSITIVE = ("temperature", "lora_alpha")
OFFICIAL_PPL = ("prefix", "exact")  # next_word.MODES
# A context cut below this many tokens cannot hold a persona sentence and the last
# utterance with their speaker tokens; such a model answers nothing it was told.
MIN_TEXT_TRUNCATE = 8


def _flag(name):
    return "--" + name.replace("_", "-")


def validate(opt):
    """Raise TransfertransfoError (one line) for the first option out of range."""
    if opt.get("bf16") and opt.get("fp16"):
        raise TransfertransfoError("--bf16 and --fp16 exclude each other: choose one")
    for name, (low, allowed) in AT_LEAST.items():
        value = opt.get(name)
        if value is None or (name in ("text_truncate", "truncate", "label_truncate") and value == -1):
            continue  # ParlAI's "no limit"
        if value < low:
            raise TransfertransfoError(f"{_flag(name)} {value} is out of range: {allowed}")
    for name in POSITIVE:
        value = opt.get(name)
        if value is not None and not value > 0:
            hint = " (for the most likely reply use --inference greedy)" if name == "temperature" else ""
            raise TransfertransfoError(f"{_flag(name)} {value} is out of range: it must be above 0{hint}")
    _check_cpu_dtype(opt)
    official = opt.get("official_ppl")
    if official is not None and official not in OFFICIAL_PPL:
        raise TransfertransfoError(f"--official-ppl {official}: choose {' or '.join(OFFICIAL_PPL)}")
    topp = opt.get("topp")
    if topp is not None and not 0 < topp <= 1:
        raise TransfertransfoError(f"--topp {topp} is out of range: a probability mass in (0, 1]")
    for name in ("text_truncate", "truncate"):
        value = opt.get(name)
        if value is not None and 0 < value < MIN_TEXT_TRUNCATE:
            raise TransfertransfoError(
                f"{_flag(name)} {value} leaves no room for the context: use at least "
                f"{MIN_TEXT_TRUNCATE} tokens (or -1 for no limit but the model's positions)"
            )
    check_background_workers(opt)


def check_background_workers(opt):
    """ParlAI's `--num-workers N` builds training batches in worker processes by length
    (its dynamic batching), which needs a context cap: without one every worker dies in a
    ValueError traceback after the model is built."""
    workers = opt.get("num_workers") or 0
    if workers > 0 and "train" in (opt.get("datatype") or "") and "evalmode" not in opt["datatype"]:
        if not any((opt.get(name) or -1) > 0 for name in ("text_truncate", "truncate")):
            raise TransfertransfoError(
                f"--num-workers {workers} batches by length in worker processes and needs a context cap: "
                "add --text-truncate N (e.g. 512, or the model's positions)"
            )


def training(opt):
    """Whether this agent trains, as ParlAI decides whether to build an optimizer: a train
    datatype (not train:evalmode), not in interactive mode (interactive, the server)."""
    if opt.get("interactive_mode"):
        return False
    datatype = opt.get("datatype") or ""
    return datatype.startswith("train") and "evalmode" not in datatype


def _check_cpu_dtype(opt):
    asked = opt.get("cpu_dtype")
    if asked is None:
        return
    cpu_dtype.resolve(asked, None, training(opt))  # an unknown mode, or bf16/int8 to train
    if asked == "int8" and opt.get("bf16"):
        raise TransfertransfoError("--cpu-dtype int8 runs its matmuls in int8 and float32: drop --bf16 true")


def check_lora_rank(opt, config):
    """A LoRA rank above the hidden size adds parameters and learns nothing more."""
    rank = opt.get("lora_rank") or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if hidden and rank > hidden:
        raise TransfertransfoError(
            f"--lora-rank {rank} is larger than the model's hidden size {hidden}: use at most "
            f"{hidden} (LoRA's point is a rank far below it, e.g. 8)"
        )
