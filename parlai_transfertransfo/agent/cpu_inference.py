"""`--cpu-dtype`: the agent's weights put in the format this CPU infers fastest, once,
after ParlAI has loaded them (recipe/cpu_dtype.py says what each mode is).

The mode is printed once per process: `auto` resolves by what the CPU multiplies natively,
and a user should see what it chose. A mode slower than fp32 on this CPU (bf16 without
AVX512-BF16 or AMX) runs, after one line saying so.
"""
from parlai.utils import logging

from parlai_transfertransfo.agent.option_checks import training
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe import cpu_dtype

_printed = set()


def apply(agent):
    """Convert `agent`'s model for its `--cpu-dtype`; returns the mode it runs in."""
    opt = agent.opt
    asked = opt.get("cpu_dtype") or "auto"
    if agent.use_cuda:
        if asked in cpu_dtype.REDUCED:
            raise TransfertransfoError(
                f"--cpu-dtype {asked} is for inference on a CPU: on a GPU use --bf16 true or --fp16 true"
            )
        return None
    capability = cpu_dtype.detect()
    mode = cpu_dtype.resolve(asked, capability, training(opt))
    heads = agent._double_heads()
    if mode == "int8" and opt.get("lora_rank", 0) > 0:
        raise TransfertransfoError(
            "--cpu-dtype int8 needs the LoRA adapter merged into the weights: export the model "
            "(parlai export_transfertransfo) and evaluate the export, or use --cpu-dtype fp32"
        )
    warning = cpu_dtype.slow_warning(mode, capability)
    line = warning or f"--cpu-dtype {asked}: {mode} weights for inference (CPU: {capability.describe()})"
    if asked == "auto" and capability.native_bf16:
        line += "; --cpu-dtype bf16 or int8 decodes faster (docs/evaluation.md gives their scores)"
    if line not in _printed:
        _printed.add(line)
        (logging.warning if warning else logging.info)(line)
    cpu_dtype.convert(heads, mode)
    return mode
