#!/usr/bin/env bash
# A shared MLflow tracking server for vaezoo runs, on loopback unless told otherwise.
#
#   bash mlflow/server.sh [--host 127.0.0.1] [--port 5000] [--store DIR|DB-URI] [--artifacts DIR] [--workers 2]
#   then, in any shell:  export MLFLOW_TRACKING_URI=http://HOST:PORT
#
# --store: a folder (SQLite: DIR/mlflow.db, the default; $VAEZOO_MLRUNS or ./mlruns) or a database URI such
#   as postgresql+psycopg2://USER@127.0.0.1:5432/mlflow (psycopg2: pip install vaezoo[server]; see README).
# --artifacts: where the server keeps the artifacts clients upload through it (default DIR/artifacts, or ./mlartifacts for a
#   database URI). Relative paths are taken from the folder you run this from, not from the repo.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
host=127.0.0.1 port=5000 store="${VAEZOO_MLRUNS:-mlruns}" artifacts="" workers=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --host) host="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --store) store="$2"; shift 2 ;;
    --artifacts) artifacts="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [[ "$store" == *://* ]]; then
  backend="$store"
  artifacts="${artifacts:-mlartifacts}"
else
  mkdir -p "$store"
  store="$(cd "$store" && pwd)"
  backend="sqlite:///$store/mlflow.db"
  artifacts="${artifacts:-$store/artifacts}"
fi
mkdir -p "$artifacts"
artifacts="$(cd "$artifacts" && pwd)"

mlflow_bin="$here/.venv/bin/mlflow"
[[ -x "$mlflow_bin" ]] || mlflow_bin="$(command -v mlflow)" || { echo "error: mlflow not found (make venv)" >&2; exit 2; }
echo "MLflow server: backend $backend, artifacts $artifacts" >&2
# MLflow 3's UI starts a new browser in its GenAI mode: add the parameter to an experiment's link to see its runs
echo "open http://$host:$port/#/experiments/ID/runs?workflowType=machine_learning" >&2
# a loaded machine answers the workers' health checks late: the default 5 s restarts them in a loop
exec "$mlflow_bin" server --host "$host" --port "$port" --workers "$workers" \
  --backend-store-uri "$backend" --serve-artifacts --artifacts-destination "$artifacts" --uvicorn-opts "--timeout-worker-healthcheck 60"
