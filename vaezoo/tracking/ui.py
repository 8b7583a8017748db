"""How a run reads in the MLflow UI: its name, MLflow's own source/commit tags, the experiment's kind, the
datasets it used (``mlflow.data``) and its parent run. Separate calls after a tracker is started; the
logging of metrics is not touched here.

mlflow is imported lazily, inside the functions that need it; a ``NullTracker`` (tracking off) makes every
call here a no-op.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import sys

# MLflow 3 opens an experiment on its GenAI traces page unless the experiment says what kind it is
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "vaezoo.kind"  # train | eval | gradvar | throughput | sampling | claims | bench | publish
_PARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("vaezoo_parent_run", default=None)


@contextlib.contextmanager
def parent_run(run_id: str | None):
    """Runs presented inside this block become children of ``run_id`` (a job of several runs reads as one)."""
    token = _PARENT.set(run_id)
    try:
        yield
    finally:
        _PARENT.reset(token)


def run_name(cfg: dict, cfg_hash: str) -> str:
    """What a training run is, in a few words: variant, dataset, bound/estimator/K, latent size, steps, short hash.

    e.g. ``vae-mnist5k-elbo-reparam-z32-3000st-1a2b3c4``; beta, K and a non-MLP backbone appear only when they
    differ from the plain VAE, so the common case stays short.
    """
    model, obj = cfg["model"], cfg["objective"]
    parts = [model["name"]]
    if model.get("backbone", "mlp") != "mlp":
        parts.append(model["backbone"])
    parts += [cfg["data"]["name"], obj["bound"], obj["estimator"]]
    if obj.get("m", 1) != 1:
        parts.append(f"m{obj['m']}")
    if obj.get("k", 1) != 1:
        parts.append(f"k{obj['k']}")
    if obj.get("beta", 1.0) != 1.0:
        parts.append(f"beta{obj['beta']:g}")
    parts += [f"z{model['latent_dim']}", f"{cfg['steps']}st", cfg_hash[:7]]
    return "-".join(str(p) for p in parts)


def source_tags(git_sha: str, entry: str | None = None) -> dict:
    """MLflow's standard source tags, so its UI fills its own Source and commit fields."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": entry or _entry_point()}
    if git_sha and git_sha != "unknown":
        tags["mlflow.source.git.commit"] = git_sha
    return tags


def _entry_point() -> str:
    """The command that made the run, e.g. ``vaezoo train`` (the program and its first word)."""
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "python"
    words = [a for a in sys.argv[1:3] if not a.startswith("-")]
    return " ".join([prog, *words[:2]]) if prog == "vaezoo" else prog


def present(tracker, name: str | None = None, kind: str | None = None, git_sha: str = "unknown",
            parent_run_id: str | None = None, entry: str | None = None) -> None:
    """Name the run, set the experiment's kind and MLflow's source/commit (and parent) tags; no-op when off."""
    client = getattr(tracker, "client", None)
    if client is None or tracker.run_id is None:
        return
    run = client.get_run(tracker.run_id)
    exp = client.get_experiment(run.info.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if name and run.info.run_name != name:
        client.update_run(tracker.run_id, name=name)
    tags = source_tags(git_sha, entry)
    if kind:
        tags[KIND_TAG] = kind
    # `mlflow run` (an MLflow Project entry point) opens a run and names it in MLFLOW_RUN_ID: nest under it
    parent_run_id = parent_run_id or _PARENT.get() or os.environ.get("MLFLOW_RUN_ID")
    if parent_run_id and parent_run_id != tracker.run_id:
        tags[PARENT_TAG] = parent_run_id
    tracker.set_tags(tags)


def ui_link(tracker, base: str = "http://127.0.0.1:5000") -> str | None:
    """The run's experiment in MLflow's UI, opened on its runs: MLflow 3.17's UI starts a new browser in its
    GenAI mode whatever the experiment's kind, and the workflowType parameter overrides that."""
    client = getattr(tracker, "client", None)
    if client is None or tracker.run_id is None:
        return None
    exp = client.get_run(tracker.run_id).info.experiment_id
    return f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning"


def array_digest(*arrays) -> str:
    """A short, stable fingerprint of the data's bytes (what MLflow shows in its Dataset column)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def log_dataset(tracker, name: str, splits: dict, note: str = "") -> None:
    """Log each split (``{"train": array, "test": array}``) as an ``mlflow.data`` dataset input of the run,
    with the split's name and size as input tags (the profile holds its shape). The source is vaezoo's
    loader (``vaezoo.data``, offline), named in the source's tags."""
    client = getattr(tracker, "client", None)
    if client is None or tracker.run_id is None:
        return
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = CodeDatasetSource({"loader": f"vaezoo.data.load_dataset('{name}')", "note": note})

    contexts = {"train": "training", "test": "testing"}
    inputs = []
    for split, array in splits.items():
        ds = mlflow.data.from_numpy(array, source=source, name=f"{name}-{split}",
                                    digest=array_digest(array))
        tags = [InputTag("mlflow.data.context", contexts.get(split, split)), InputTag("vaezoo.split", split),
                InputTag("vaezoo.split_size", str(len(array)))]
        inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=tags))
    client.log_inputs(tracker.run_id, datasets=inputs)


def present_training(tracker, cfg: dict, cfg_hash: str, dataset, git_sha: str, parent_run_id: str | None = None) -> None:
    """A training run as the UI shows it: its name, tags, and its train/test splits as datasets."""
    if getattr(tracker, "client", None) is None:
        return
    present(tracker, run_name(cfg, cfg_hash), "train", git_sha, parent_run_id, entry="vaezoo train")
    from vaezoo.data.datasets import DATASET_NOTES

    log_dataset(tracker, dataset.name, {"train": dataset.train.numpy(), "test": dataset.test.numpy()},
                DATASET_NOTES.get(dataset.name, ""))


@contextlib.contextmanager
def system_metrics(tracker, interval_s: float = 2.0):
    """MLflow's system metrics (CPU, memory, disk, network; GPU where there is one) sampled into the run
    while the block runs: a benchmark's figures then sit beside the load the machine was under."""
    client = getattr(tracker, "client", None)
    monitor = None
    if client is not None and tracker.run_id is not None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(tracker.run_id, sampling_interval=interval_s, tracking_uri=tracker.uri)
            monitor.start()
        except ImportError:  # psutil missing: the run is still logged, without system metrics
            monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()
