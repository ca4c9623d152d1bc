#!/usr/bin/env bash
# Install trackbridge, then run the main job: `trackbridge demo` (trains, registers, serves).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/trackbridge demo "$@"
