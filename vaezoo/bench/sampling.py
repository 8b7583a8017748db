"""``vaezoo bench sampling``: decoder throughput (images/s) and per-call latency (p50, p99) at batch
1, 64 and 1024 for onnxruntime fp32, onnxruntime int8 (dynamic, QUInt8) and torch eager.

Each backend runs in its own process: onnxruntime's and torch's thread pools would otherwise compete,
and the onnxruntime processes never import torch. The processes stay up and take turns: for each batch size
every backend runs one timed window per round (the order rotating each round), while the others wait idle,
so a burst of load from other jobs on the machine falls on all backends alike instead of on whichever ran
then. Every backend decodes the same z (numpy seed 0) with the same thread count, which each worker reports
back and every row carries. A run writes a CSV named by its environment (CPU, versions, threads) under
``benchmarks/results/`` and logs one MLflow run. Compare backends only within one run (ratios), never
across machines or runs. With more than one thread, a backend's idle pool threads may spin briefly into the
next backend's window (OpenMP's and onnxruntime's wait policies); the default of 1 thread has no pool.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from vaezoo.bench.results import slug, write_csv
from vaezoo.cli.options import comma_ints, tracking_options
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import make_dir

BACKENDS = ("ort-fp32", "ort-int8", "torch")
FIELDS = ["decoder", "backend", "batch", "threads", "windows", "calls", "images_per_s", "p50_ms", "p99_ms", "mean_ms",
          "max_abs_err_vs_fp32"]
MIN_CALLS, MAX_CALLS = 20, 200_000  # per backend and batch, over all its windows


# ---------------------------------------------------------------- worker (one backend, its own process)


def _decode_fn(backend: str, path: str, threads: int):
    """A function z -> images for one backend. Only the torch backend imports torch."""
    if backend == "torch":
        import onnx
        import torch

        from exporters.graph import load_torch_decoder

        torch.set_num_threads(threads)
        head = load_torch_decoder(onnx.load(path))

        def run_torch(z):
            with torch.inference_mode():
                return head(torch.from_numpy(z)).numpy()

        run_torch.threads = torch.get_num_threads()  # what torch will use, read back
        return run_torch
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    def run_ort(z):
        return sess.run(["x"], {"z": z})[0]

    run_ort.threads = sess.get_session_options().intra_op_num_threads  # what the session holds, read back
    return run_ort


def window(fn, z, seconds: float, min_calls: int, max_calls: int) -> dict:
    """One timed window: per-call latencies of ``fn(z)`` for at least ``seconds`` and ``min_calls`` calls, with the
    window's start and end on the system-wide monotonic clock (comparable between processes)."""
    lat = []
    start = time.monotonic()
    t0 = time.perf_counter()
    while (len(lat) < min_calls or time.perf_counter() - t0 < seconds) and len(lat) < max_calls:
        t = time.perf_counter()
        fn(z)
        lat.append(time.perf_counter() - t)
    busy = time.perf_counter() - t0
    return {"latencies": lat, "busy_s": busy, "start": start, "end": time.monotonic()}


def worker_main(spec_json: str) -> None:
    """Entry of a worker process: reports its thread count, then runs one window per command line on stdin
    ({"batch", "warmup"} or {"batch", "seconds", "min_calls", "max_calls"}) and answers with one JSON line."""
    import numpy as np

    spec = json.loads(spec_json)
    fn = _decode_fn(spec["backend"], spec["path"], spec["threads"])
    print(json.dumps({"threads": fn.threads}), flush=True)
    zs: dict[int, np.ndarray] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        b = cmd["batch"]
        if b not in zs:
            zs[b] = np.random.default_rng(0).standard_normal((b, spec["latent_dim"]), dtype=np.float32)
        if "warmup" in cmd:
            res = window(fn, zs[b], cmd["warmup"], 1, MAX_CALLS)
        else:
            res = window(fn, zs[b], cmd["seconds"], cmd["min_calls"], cmd["max_calls"])
        print(json.dumps({**res, "threads": fn.threads}), flush=True)


# ---------------------------------------------------------------- parent


def results_name(threads: int) -> str:
    """timm-style file name: the environment that produced the numbers."""
    from importlib import metadata

    from vaezoo.tracking.provenance import cpu_model

    vers = {p: metadata.version(p) for p in ("onnxruntime", "torch")}
    return f"sampling-{slug(cpu_model())}-ort{vers['onnxruntime']}-torch{vers['torch'].split('+')[0]}-t{threads}.csv"


def prepare(decoder: str, work: Path, cache: str | Path | None = None) -> dict:
    """fp32 and int8 files for one decoder (a shipped name or an fp32 .onnx from vaezoo export); a shipped
    name is pulled into ``cache`` (default: the user's cache)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from exporters.precision import to_int8
    from vaezoo.runtime import Decoder

    dec = Decoder(decoder, cache=cache)
    if dec.metadata.get("precision", "fp32") != "fp32":
        raise VaezooError(f"'{decoder}' is not an fp32 decoder graph; the benchmark quantises it itself")
    int8_path = work / f"{slug(Path(str(dec.path)).stem)}-int8.onnx"
    onnx.save(to_int8(onnx.load(str(dec.path)), "quint8"), str(int8_path))
    z = np.random.default_rng(1).standard_normal((1024, dec.latent_dim), dtype=np.float32)
    q = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"]).run(["x"], {"z": z})[0]
    err = float(np.abs(q - dec.decode(z)).max())
    return {"fp32": str(dec.path), "int8": str(int8_path), "latent_dim": dec.latent_dim, "int8_err": err}


class _Worker:
    """One backend in its own process, answering one timed window per request."""

    def __init__(self, backend: str, files: dict, threads: int) -> None:
        spec = {"backend": backend, "path": files["int8" if backend == "ort-int8" else "fp32"], "threads": threads,
                "latent_dim": files["latent_dim"]}
        self.backend = backend
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker cannot block on it
        self.proc = subprocess.Popen([sys.executable, "-m", "vaezoo.bench.sampling", json.dumps(spec)], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.threads = self._read()["threads"]
        if self.threads != threads:
            raise VaezooError(f"{backend} worker runs {self.threads} threads, {threads} were asked for")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            lines = self.stderr.read().strip().splitlines()
            raise VaezooError(f"{self.backend} worker failed: {lines[-1] if lines else self.proc.returncode}")
        return json.loads(line)

    def ask(self, cmd: dict) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()  # the worker's loop ends at end of input
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def run_interleaved(backends: list[str], files: dict, batches: list[int], threads: int, min_time: float, warmup: float,
                    rounds: int) -> tuple[list[dict], list[dict]]:
    """Rows per (backend, batch) and the schedule of timed windows: for each batch, ``rounds`` rounds in which each
    backend runs one window of ``min_time / rounds`` seconds, the order rotating each round."""
    import numpy as np

    workers: dict[str, _Worker] = {}
    rows, schedule = [], []
    try:
        for backend in backends:
            workers[backend] = _Worker(backend, files, threads)
        per_window = {"seconds": min_time / rounds, "min_calls": -(-MIN_CALLS // rounds), "max_calls": MAX_CALLS // rounds}
        for b in batches:
            for w in workers.values():
                w.ask({"batch": b, "warmup": warmup})
            lat: dict[str, list[float]] = {name: [] for name in workers}
            busy = dict.fromkeys(workers, 0.0)
            names = list(workers)
            for r in range(rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    res = workers[name].ask({"batch": b, **per_window})
                    lat[name] += res["latencies"]
                    busy[name] += res["busy_s"]
                    schedule.append({"backend": name, "batch": b, "round": r, "start": res["start"], "end": res["end"],
                                     "threads": res["threads"]})
            for name in names:
                arr = np.asarray(lat[name])
                rows.append({"backend": name, "batch": b, "threads": workers[name].threads, "windows": rounds,
                             "calls": len(arr), "images_per_s": b * len(arr) / busy[name],
                             "p50_ms": 1e3 * float(np.percentile(arr, 50)), "p99_ms": 1e3 * float(np.percentile(arr, 99)),
                             "mean_ms": 1e3 * float(arr.mean())})
    finally:
        for w in workers.values():
            w.close()
    return rows, schedule


def sampling_bench(decoders: list[str], batches: list[int], backends: list[str], threads: int, min_time: float,
                   warmup: float, out_dir: str | Path, track: bool = True, tracking_uri: str | None = None,
                   rounds: int = 5) -> tuple[list[dict], Path, list[dict]]:
    """Run the benchmark; returns (rows, CSV path, the schedule of timed windows)."""
    from vaezoo import tracking

    rows: list[dict] = []
    schedule: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for decoder in decoders:
            files = prepare(decoder, Path(tmp))
            got, windows = run_interleaved(backends, files, batches, threads, min_time, warmup, rounds)
            schedule += [{"decoder": decoder, **w} for w in windows]
            for r in got:
                err = files["int8_err"] if r["backend"] == "ort-int8" else ""
                rows.append({"decoder": decoder, **r, "max_abs_err_vs_fp32": err})
    path = Path(out_dir) / results_name(threads)
    write_csv(path, rows, FIELDS)
    tracker = tracking.start(track, "bench-sampling", tracking_uri)
    tracker.log_params({"decoders": ",".join(decoders), "batches": ",".join(map(str, batches)),
                        "backends": ",".join(backends), "threads": threads, "min_time_s": min_time, "rounds": rounds,
                        "int8": "dynamic QUInt8"})
    if track:
        import torch

        from vaezoo.tracking.provenance import provenance

        tracker.set_tags(provenance(torch.device("cpu"), 0))
    tracker.log_metrics({f"{r['decoder']}.{r['backend']}.b{r['batch']}.{m}": r[m] for r in rows
                         for m in ("images_per_s", "p50_ms", "p99_ms")}, 0)
    tracker.log_artifact(path)
    tracker.end()
    return rows, path, schedule


@click.command("sampling")
@click.option("--decoder", "decoders", multiple=True, default=("mlp-vae.mnist5k", "conv-vae.mnist5k"), show_default=True,
              help="A shipped decoder name or an fp32 .onnx file from `vaezoo export` (repeatable).")
@click.option("--batches", default="1,64,1024", show_default=True)
@click.option("--backends", default=",".join(BACKENDS), show_default=True)
@click.option("--threads", type=int, default=1, show_default=True,
              help="Threads for every backend (each row says it; with 2 on a busy 2-core machine torch stalled).")
@click.option("--min-time", type=float, default=2.0, show_default=True, help="Seconds timed per backend and batch.")
@click.option("--rounds", type=int, default=5, show_default=True,
              help="Windows per backend and batch, the backends taking turns (min-time is split between them).")
@click.option("--warmup", type=float, default=0.3, show_default=True)
@click.option("--out-dir", default="benchmarks/results", show_default=True)
@tracking_options
def sampling_command(decoders, batches, backends, threads, min_time, rounds, warmup, out_dir, no_track, tracking_uri) -> None:
    """Decoder sampling speed: onnxruntime fp32 / int8 vs torch eager, each in its own process, taking turns."""
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    bad = [b for b in chosen if b not in BACKENDS]
    if bad or not chosen:
        raise VaezooError(f"unknown backend(s) {bad or chosen}; choose from {', '.join(BACKENDS)}")
    if not (threads >= 1 and rounds >= 1 and 0 < min_time < math.inf and 0 <= warmup < math.inf):  # nan fails too
        raise VaezooError("--threads and --rounds must be >= 1, --min-time finite and > 0, --warmup finite and >= 0")
    batch_sizes = list(comma_ints(batches, "--batches", minimum=1))
    make_dir(out_dir)
    rows, path, _ = sampling_bench(list(decoders), batch_sizes, chosen, threads, min_time, warmup, out_dir,
                                   track=not no_track, tracking_uri=tracking_uri, rounds=rounds)
    click.echo(f"{'decoder':20s} {'backend':9s} {'batch':>6s} {'threads':>7s} {'images/s':>12s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for r in rows:
        click.echo(f"{r['decoder']:20s} {r['backend']:9s} {r['batch']:6d} {r['threads']:7d} {r['images_per_s']:12,.0f} "
                   f"{r['p50_ms']:9.4f} {r['p99_ms']:9.4f}")
    by = {(r["decoder"], r["backend"], r["batch"]): r["images_per_s"] for r in rows}
    for dec in decoders:
        for b in batch_sizes:
            if (dec, "torch", b) in by and (dec, "ort-fp32", b) in by:
                click.echo(f"{dec} batch {b}, {threads} thread(s) each: onnxruntime fp32 / torch eager = "
                           f"{by[(dec, 'ort-fp32', b)] / by[(dec, 'torch', b)]:.2f}x")
    int8 = {r["decoder"]: r["max_abs_err_vs_fp32"] for r in rows if r["backend"] == "ort-int8"}
    for dec, err in int8.items():
        click.echo(f"{dec}: int8 (QUInt8) max |int8 - fp32| per pixel = {err:.4f}")
    click.echo(f"written: {path}")


if __name__ == "__main__":
    worker_main(sys.argv[1])
