#!/usr/bin/env bash
# A local MLflow tracking server over vaezoo's default store (./mlruns), on loopback only.
#   bash mlflow/server.sh [PORT]        then: export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."
store="${VAEZOO_MLRUNS:-mlruns}"
mkdir -p "$store/artifacts"
exec .venv/bin/mlflow server --host 127.0.0.1 --port "${1:-5000}" \
  --backend-store-uri "sqlite:///$PWD/$store/mlflow.db" --default-artifact-root "$PWD/$store/artifacts"
