#!/usr/bin/env bash
# Create .venv and install trackbridge into it (idempotent; sourced by demo.sh and test.sh).
#   bash scripts/setup.sh          the package
#   bash scripts/setup.sh test     the package, the test tools, Chromium and PostgreSQL
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

# torch first, pinned: the project's machines keep the 2.13.0 CPU build on disk, and
# an unpinned torch would download a multi-GB CUDA build. Skipped when any torch
# the package accepts is already there.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "==> installing torch 2.13.0 (CPU)"
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi

extras=""
if [ "${1:-}" = "test" ]; then extras="[test]"; fi
echo "==> installing trackbridge${extras}"
.venv/bin/python -m pip install --quiet -e ".${extras}"

if [ "${1:-}" = "test" ]; then
  # System packages for the browser test (Chromium) and the team-server test (PostgreSQL).
  need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "==> installing ${need[*]} with apt-get"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
