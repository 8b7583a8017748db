#!/usr/bin/env bash
# One GPU session for issue 5: the CUDA tests, then the training-throughput benchmark on cuda.
#
#   VAEZOO_GIT_SHA=<sha> VAEZOO_GIT_DIRTY=false OUT=/some/dir bash benchmarks/gpu_check.sh
#
# The device tool sets $OUT. Its copy of the tree has no history, so the commit the rows were measured at comes
# from $VAEZOO_GIT_SHA (write the sha of a clean checkout into the command); without it rows say "unknown".
#
# Runs from the source tree with python3 (no install, no internet, no MLflow): PYTHONPATH=., tracking off,
# synthetic data. Every stage has its own time limit, cut to what is left of the whole budget
# (BUDGET_S, default 360 s), and a failing stage does not stop the others. Everything lands flat in $OUT
# (at most 8 files): gpu_check.log, pytest_cuda.txt, train-{fp32,bf16,fp16}-<env>.csv, train-<env>.png,
# ddp.json. The CSVs go to benchmarks/results/ when committed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/vaezoo-gpu}"
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-360}"
LOG="$OUT/gpu_check.log"
START=$(date +%s)
: >"$LOG"

say() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# stage NAME LIMIT_S COMMAND...: run with a time limit (never past the budget); log rc and seconds.
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - START)))
    if ((left < 15)); then
        say "SKIP $name (budget spent)"
        return
    fi
    ((limit > left)) && limit=$left
    say "BEGIN $name (limit ${limit}s)"
    local t0=$(date +%s)
    timeout -k 5 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "END $name rc=$rc ($(($(date +%s) - t0))s)$( ((rc == 124)) && echo ' TIMED OUT')"
}

TP=("$PY" -m vaezoo.bench.throughput --device cuda --no-track --out-dir "$OUT" --windows 5 --window-s 0.2 --warmup-s 0.2)

say "commit ${VAEZOO_GIT_SHA:-unknown} (dirty: ${VAEZOO_GIT_DIRTY:-unknown})"
stage env 30 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported())'"

# 1. CUDA tests: this issue's files first, then every cuda-marked test (other files may not import here).
stage pytest-cuda 120 bash -c "$PY -m pytest -q -m cuda -p no:cacheprovider tests/test_throughput.py >'$OUT/pytest_cuda.txt' 2>&1; rc=\$?; \
  $PY -m pytest -q -m cuda -p no:cacheprovider --continue-on-collection-errors --ignore=tests/test_throughput.py tests \
  >>'$OUT/pytest_cuda.txt' 2>&1; grep -E 'passed|failed|error' '$OUT/pytest_cuda.txt'; exit \$rc"

# 2. MLP VAE (the ANCHORS model): fp32 and bf16, eager and whole-step CUDA graph, batch 128 to 65536.
stage mlp-eager-graph 90 "${TP[@]}" --model vae --backbone mlp --batch-size 128,1024,8192,65536 --mode eager,cudagraph --precision fp32,bf16

# 3. fp16 with a GradScaler (eager: the scaler reads back found-inf, so it cannot be captured).
stage mlp-fp16 30 "${TP[@]}" --model vae --backbone mlp --batch-size 128,8192,65536 --mode eager --precision fp16

# 4. Conv VAE.
stage conv 60 "${TP[@]}" --model vae --backbone conv --batch-size 128,1024,8192 --mode eager,cudagraph --precision fp32,bf16

# 5. DDP through torchrun with NCCL (one GPU: a world of one, the code path and its overhead).
stage ddp-nccl 40 "$PY" -m torch.distributed.run --nproc-per-node 1 -m vaezoo.bench.ddp --device cuda --batch-size 8192 \
  --windows 3 --window-s 0.2 --warmup-s 0.2 --out "$OUT/ddp.json"

# 6. torch.compile of the whole step, fp32 then bf16 (slowest to start: compiles per batch size; rows are saved as
#    they finish).
stage compile 150 "${TP[@]}" --model vae --backbone mlp --batch-size 1024,65536 --mode eager,compile --precision fp32,bf16

say "done; files in $OUT:"
ls -la "$OUT" | tee -a "$LOG"
# The CSVs as the benchmark prints its table (by column name, so a new column cannot shift what is shown).
"$PY" -c 'import sys; from pathlib import Path; from vaezoo.bench.throughput import HEADER, format_row, read_rows
for f in map(Path, sys.argv[1:]):
    if f.is_file(): print(f"== {f}", HEADER, *map(format_row, read_rows(f)), sep="\n")' "$OUT"/train-*.csv 2>&1 | tee -a "$LOG"
exit 0
