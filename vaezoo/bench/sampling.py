"""``vaezoo bench sampling``: decoder throughput (images/s) and per-call latency (p50, p99) at batch
1, 64 and 1024 for onnxruntime fp32, onnxruntime int8 (dynamic, QUInt8) and torch eager.

Each backend runs in its own process: onnxruntime's and torch's thread pools would otherwise compete,
and the onnxruntime processes never import torch. Every backend decodes the same z (numpy seed 0) with
the same thread count. A run writes a CSV named by its environment (CPU, versions, threads) under
``benchmarks/results/`` and logs one MLflow run. Compare backends only within one run (ratios), never
across machines or runs.
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
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import make_dir

BACKENDS = ("ort-fp32", "ort-int8", "torch")
FIELDS = ["decoder", "backend", "batch", "threads", "calls", "images_per_s", "p50_ms", "p99_ms", "mean_ms",
          "max_abs_err_vs_fp32"]


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

        return run_torch
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return lambda z: sess.run(["x"], {"z": z})[0]


def measure(fn, z, min_time: float, warmup: float, min_calls: int = 20, max_calls: int = 200_000) -> dict:
    """Per-call latencies of ``fn(z)`` after ``warmup`` seconds, for at least ``min_time`` seconds."""
    import numpy as np

    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end:
        fn(z)
    lat = []
    t0 = time.perf_counter()
    while (len(lat) < min_calls or time.perf_counter() - t0 < min_time) and len(lat) < max_calls:
        t = time.perf_counter()
        fn(z)
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    arr = np.asarray(lat)
    return {"calls": len(lat), "images_per_s": len(z) * len(lat) / total, "p50_ms": 1e3 * float(np.percentile(arr, 50)),
            "p99_ms": 1e3 * float(np.percentile(arr, 99)), "mean_ms": 1e3 * float(arr.mean())}


def worker_main(spec_json: str) -> None:
    """Entry of a worker process: prints one JSON row per batch size."""
    import numpy as np

    spec = json.loads(spec_json)
    fn = _decode_fn(spec["backend"], spec["path"], spec["threads"])
    for b in spec["batches"]:
        z = np.random.default_rng(0).standard_normal((b, spec["latent_dim"]), dtype=np.float32)
        row = measure(fn, z, spec["min_time"], spec["warmup"])
        print(json.dumps({"backend": spec["backend"], "batch": b, **row}), flush=True)


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


def run_backend(backend: str, files: dict, batches: list[int], threads: int, min_time: float, warmup: float) -> list[dict]:
    spec = {"backend": backend, "path": files["int8" if backend == "ort-int8" else "fp32"], "batches": batches,
            "threads": threads, "latent_dim": files["latent_dim"], "min_time": min_time, "warmup": warmup}
    proc = subprocess.run([sys.executable, "-m", "vaezoo.bench.sampling", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise VaezooError(f"{backend} worker failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise VaezooError(f"--batches expects comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise VaezooError(f"--batches must be integers >= 1, got '{text}'")
    return values


def sampling_bench(decoders: list[str], batches: list[int], backends: list[str], threads: int, min_time: float,
                   warmup: float, out_dir: str | Path, track: bool = True, tracking_uri: str | None = None) -> tuple[list[dict], Path]:
    """Run the benchmark; returns (rows, CSV path)."""
    from vaezoo import tracking

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for decoder in decoders:
            files = prepare(decoder, Path(tmp))
            for backend in backends:
                for r in run_backend(backend, files, batches, threads, min_time, warmup):
                    err = files["int8_err"] if backend == "ort-int8" else ""
                    rows.append({"decoder": decoder, **r, "threads": threads, "max_abs_err_vs_fp32": err})
    path = Path(out_dir) / results_name(threads)
    write_csv(path, rows, FIELDS)
    tracker = tracking.start(track, "bench-sampling", tracking_uri)
    tracker.log_params({"decoders": ",".join(decoders), "batches": ",".join(map(str, batches)),
                        "backends": ",".join(backends), "threads": threads, "min_time_s": min_time, "int8": "dynamic QUInt8"})
    if track:
        import torch

        from vaezoo.tracking.provenance import provenance

        tracker.set_tags(provenance(torch.device("cpu"), 0))
    tracker.log_metrics({f"{r['decoder']}.{r['backend']}.b{r['batch']}.{m}": r[m] for r in rows
                         for m in ("images_per_s", "p50_ms", "p99_ms")}, 0)
    tracker.log_artifact(path)
    tracker.end()
    return rows, path


@click.command("sampling")
@click.option("--decoder", "decoders", multiple=True, default=("mlp-vae.mnist5k", "conv-vae.mnist5k"), show_default=True,
              help="A shipped decoder name or an fp32 .onnx file from `vaezoo export` (repeatable).")
@click.option("--batches", default="1,64,1024", show_default=True)
@click.option("--backends", default=",".join(BACKENDS), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="Threads for every backend.")
@click.option("--min-time", type=float, default=2.0, show_default=True, help="Seconds timed per backend and batch.")
@click.option("--warmup", type=float, default=0.3, show_default=True)
@click.option("--out-dir", default="benchmarks/results", show_default=True)
@click.option("--no-track", is_flag=True)
@click.option("--tracking-uri", default=None)
def sampling_command(decoders, batches, backends, threads, min_time, warmup, out_dir, no_track, tracking_uri) -> None:
    """Decoder sampling speed: onnxruntime fp32 / int8 vs torch eager, each in its own process."""
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    bad = [b for b in chosen if b not in BACKENDS]
    if bad or not chosen:
        raise VaezooError(f"unknown backend(s) {bad or chosen}; choose from {', '.join(BACKENDS)}")
    if not (threads >= 1 and 0 < min_time < math.inf and 0 <= warmup < math.inf):  # nan fails too
        raise VaezooError("--threads must be >= 1, --min-time finite and > 0, --warmup finite and >= 0")
    batch_sizes = _int_list(batches)
    make_dir(out_dir)
    rows, path = sampling_bench(list(decoders), batch_sizes, chosen, threads, min_time, warmup, out_dir,
                                track=not no_track, tracking_uri=tracking_uri)
    click.echo(f"{'decoder':20s} {'backend':9s} {'batch':>6s} {'images/s':>12s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for r in rows:
        click.echo(f"{r['decoder']:20s} {r['backend']:9s} {r['batch']:6d} {r['images_per_s']:12,.0f} "
                   f"{r['p50_ms']:9.4f} {r['p99_ms']:9.4f}")
    by = {(r["decoder"], r["backend"], r["batch"]): r["images_per_s"] for r in rows}
    for dec in decoders:
        for b in batch_sizes:
            if (dec, "torch", b) in by and (dec, "ort-fp32", b) in by:
                click.echo(f"{dec} batch {b}: onnxruntime fp32 / torch eager = {by[(dec, 'ort-fp32', b)] / by[(dec, 'torch', b)]:.2f}x")
    int8 = {r["decoder"]: r["max_abs_err_vs_fp32"] for r in rows if r["backend"] == "ort-int8"}
    for dec, err in int8.items():
        click.echo(f"{dec}: int8 (QUInt8) max |int8 - fp32| per pixel = {err:.4f}")
    click.echo(f"written: {path}")


if __name__ == "__main__":
    worker_main(sys.argv[1])
