#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
export MLFLOW_DISABLE_TELEMETRY=true
exec .venv/bin/python -m pytest "$@"
