#!/usr/bin/env bash
# A local MLflow tracking server over vaezoo's default store (./mlruns, or $VAEZOO_MLRUNS), on loopback only.
#   bash mlflow/server.sh [PORT]        then: export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."
# the store as vaezoo.tracking resolves it, not rebuilt here: an absolute VAEZOO_MLRUNS is used as given, a
# relative one (or the default mlruns) is taken from the repo root, as before
store="$(.venv/bin/python -c 'from vaezoo.tracking import default_store; print(default_store())')"
mkdir -p "$store/artifacts"
exec .venv/bin/mlflow server --host 127.0.0.1 --port "${1:-5000}" \
  --backend-store-uri "sqlite:///$store/mlflow.db" --default-artifact-root "$store/artifacts"
