"""Export a trained run's decoder: build the graph, make the requested variant, stamp the metadata,
verify (checker + onnxruntime vs torch at batch 1, 64, 1024), and only then write the file atomically."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

import vaezoo
from exporters.graph import OPSET, OUTPUT_MEANING, DecoderHead, decoder_parameter_count, set_metadata, to_onnx
from exporters.precision import INT8_WEIGHT_TYPES, int8_error_table, to_fp16, to_int8
from exporters.sampler import wrap_sampler
from exporters.verify import check_graph, gate, parity
from vaezoo.core.configs import to_dict
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_bytes
from vaezoo.runtime.cache import sha256_bytes  # noqa: F401  (re-exported for exporters.pretrained)

# metrics a run reports, as they are named in final.json / eval.json, and as they appear in the metadata
PRECISIONS = ("fp32", "int8", "fp16")
RUN_METRICS = {"test_elbo": "test_elbo", "test_iwae_k64": "test_iwae_k64", "elbo": "test_elbo",
               "iwae_k64": "test_iwae_k64", "ll_is": "test_ll_is", "ll_is_mc_se": "test_ll_is_mc_se",
               "ll_is_samples": "ll_is_samples", "active_units": "active_units", "test_recon": "test_recon",
               "kl": "test_kl"}


@dataclass
class ExportOptions:
    """precision: fp32 | int8 | fp16; sampler: input a count n and draw z inside (seed fixed here)."""

    precision: str = "fp32"
    int8_weight_type: str = "quint8"
    int8_reduce_range: bool = False
    int8_per_channel: bool = False
    sampler: bool = False
    sampler_seed: int = 0
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise VaezooError(f"unknown precision '{self.precision}'; choose from {', '.join(PRECISIONS)}")
        if self.int8_weight_type not in INT8_WEIGHT_TYPES:
            raise VaezooError(f"unknown int8 weight type '{self.int8_weight_type}'; choose from {', '.join(INT8_WEIGHT_TYPES)}")


def state_sha256(state: dict) -> str:
    """sha256 of a state_dict's tensors (sorted names, dtype, shape, raw bytes). Hashes the weights, not the
    checkpoint file, whose zip records carry the temp file's random name and so differ between equal runs."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_metadata(model, options: ExportOptions) -> dict:
    """What the graph is: model, shapes, likelihood, what the output means, precision, graph kind."""
    cfg = model.cfg
    meta = {
        "version": vaezoo.__version__,
        "model": cfg.name,
        "backbone": cfg.backbone,
        "model_config": to_dict(cfg),
        "latent_dim": model.latent_dim,
        "output_shape": list(cfg.input_shape),
        "likelihood": cfg.likelihood,
        "output": OUTPUT_MEANING[cfg.likelihood],
        "parameter_count": decoder_parameter_count(model),
        "precision": options.precision,
        "graph": "sampler" if options.sampler else "decoder",
        "opset": options.opset,
        "torch_version": torch.__version__,
    }
    if options.precision == "int8":
        meta["int8"] = {"weight_type": options.int8_weight_type, "reduce_range": options.int8_reduce_range,
                        "per_channel": options.int8_per_channel, "method": "onnxruntime quantize_dynamic"}
    if options.sampler:
        meta["sampler_seed"] = options.sampler_seed
    if not getattr(model, "standard_prior", True):
        meta["prior"] = prior_mixture(model)
    return meta


@torch.no_grad()
def prior_mixture(model) -> dict:
    """The VampPrior as the runtime samples it: the C components q(z | u_c), means and scales [C][d], computed
    now from the pseudo-inputs (the graph holds the decoder alone)."""
    comp = model.prior_components()
    return {"kind": "mixture", "weights": "uniform", "means": comp.mu.float().tolist(),
            "scales": comp.sigma.float().tolist()}


def export_model(model, out: str | Path, options: ExportOptions | None = None, extra_metadata: dict | None = None) -> dict:
    """Export ``model``'s decoder to ``out``; returns the verification report. Writes nothing on failure."""
    options = options or ExportOptions()
    if options.sampler and not getattr(model, "standard_prior", True):
        raise VaezooError(f"the sampler graph draws z from N(0, I) inside ONNX; model '{model.cfg.name}' has a mixture "
                          "prior it cannot draw from: export the decoder graph (its metadata holds the mixture, and "
                          "vaezoo.runtime's Decoder.sample draws from it)")
    model = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    head = DecoderHead(model).eval()
    d = model.latent_dim
    proto = to_onnx(model, options.opset)
    report: dict = {"precision": options.precision, "graph": "sampler" if options.sampler else "decoder"}
    if options.precision == "int8":
        report["int8_error_table"] = int8_error_table(proto, head, d)
        proto = to_int8(proto, options.int8_weight_type, options.int8_reduce_range, options.int8_per_channel)
    elif options.precision == "fp16":
        proto = to_fp16(proto)
    if options.sampler:
        proto = wrap_sampler(proto, d, options.sampler_seed)
    set_metadata(proto, {**model_metadata(model, options), **(extra_metadata or {})})
    proto.producer_name, proto.producer_version = "vaezoo", vaezoo.__version__
    blob = proto.SerializeToString()
    check_graph(blob)
    max_tol, mean_tol, note = gate(options.precision, options.int8_weight_type, options.int8_reduce_range,
                                   options.int8_per_channel)
    report["parity"] = parity(blob, head, d, max_tol, sampler=options.sampler, mean_tolerance=mean_tol, gate_note=note)
    atomic_write_bytes(out, blob)
    report.update({"path": str(out), "sha256": sha256_bytes(blob), "size_bytes": len(blob),
                   "opset": options.opset, "checker": "passed (full_check)"})
    return report


def run_metadata(run_dir: str | Path, state: dict | None = None, record=None) -> dict:
    """Provenance of a run for the graph's metadata: config hash, dataset, key metrics, weights sha256.

    ``state`` (the model's state_dict) and ``record`` (the Recorded config), when the caller has already
    loaded the run (``vaezoo.training.loop.load_run``), spare reading the checkpoint and config.json again.
    """
    from vaezoo.training import RunDir
    from vaezoo.training.rundir import load_checkpoint

    rd = RunDir(Path(run_dir))
    record = record if record is not None else rd.read_config_record()
    if state is None:
        state = load_checkpoint(rd.checkpoint)["model"]
    cfg = record.cfg
    metrics: dict = {}
    for name in ("final.json", "eval.json"):
        path = rd.path / name
        if path.is_file():
            data = json.loads(path.read_text())
            metrics.update({RUN_METRICS[k]: v for k, v in data.items() if k in RUN_METRICS})
    return {
        "config_hash": record.hash,  # the hash the run's checkpoints carry
        "dataset": cfg.data.name,
        "binarize": cfg.data.binarize,
        "metrics": metrics,
        "weights_sha256": state_sha256(state),
        "weights_hash": "sha256 over the checkpoint's model state_dict: sorted names, dtype, shape, raw bytes",
        "run": rd.path.name,
    }


def export_run(run_dir: str | Path, out: str | Path, options: ExportOptions | None = None) -> dict:
    """``vaezoo export RUN --out decoder.onnx``: the run's decoder with its provenance."""
    from vaezoo.training import load_run

    model, record = load_run(run_dir, "cpu")
    # load_run checked the checkpoint against the record, and the model holds exactly its weights
    return export_model(model, out, options, run_metadata(run_dir, model.state_dict(), record))


def read_metadata(path: str | Path) -> dict:
    """The ``vaezoo.*`` metadata of an ONNX file (without loading its weights into a session)."""
    from exporters.graph import get_metadata

    return get_metadata(onnx.load(str(path), load_external_data=False))
