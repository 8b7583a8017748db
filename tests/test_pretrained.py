"""The shipped pretrained decoders: the manifest agrees with the files, each samples, the recipe reruns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporters.graph import get_metadata, load_torch_decoder
from exporters.pretrained import RECIPES, compare
from exporters.verify import TOLERANCE, parity
from vaezoo.cli import main
from vaezoo.core.configs import load_recorded
from vaezoo.runtime import Decoder, check_name, list_pretrained, load_manifest
from vaezoo.runtime.catalog import MANIFEST_FORMAT, pretrained_dir
from vaezoo.training.config import TrainConfig

REQUIRED = {"mlp-vae.mnist5k", "mlp-iwae5.mnist5k", "conv-vae.mnist5k", "mlp-vae.digits"}
FIELDS = {"name": str, "description": str, "file": str, "sha256": str, "size_bytes": int, "parameter_count": int,
          "latent_dim": int, "output_shape": list, "likelihood": str, "output": str, "dataset": str, "recipe": dict,
          "metrics": dict, "tolerance": dict, "license": str, "data_license": str, "training": dict, "parity": dict}
# config keys added since the shipped decoders were trained, each with a default that changes nothing they did: a
# constant KL weight, no free bits, one outer sample (m), a floor under a learned sigma (theirs are Bernoulli), STL on IWAE refused
ADDED_SINCE_BUILD = {"objective.schedule", "objective.free_bits", "objective.m", "model.sigma_floor", "allow_stl_iwae",
                     "model.pseudo_inputs", "data.validation", "optim.milestones", "optim.gamma"}
ENTRIES = [e.to_dict() for e in list_pretrained()]  # as plain data, the way the manifest holds them


def test_manifest_lists_the_required_decoders():
    assert load_manifest()["format"] == MANIFEST_FORMAT
    assert REQUIRED <= {e["name"] for e in ENTRIES}
    assert len({e["name"] for e in ENTRIES}) == len(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_manifest_entry_matches_its_file(entry):
    for field, kind in FIELDS.items():
        assert isinstance(entry[field], kind), field
    check_name(entry["name"])
    assert entry["file"] == f"{entry['name']}.onnx"
    path = pretrained_dir() / entry["file"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert len(data) == entry["size_bytes"] <= 4_000_000
    assert b".py" not in data  # no exporter stack traces: nothing of the machine that built it
    meta = get_metadata(onnx.load_from_string(data))
    assert meta["name"] == entry["name"] and meta["metrics"] == entry["metrics"]
    assert meta["latent_dim"] == entry["latent_dim"] and meta["output_shape"] == entry["output_shape"]
    assert meta["parameter_count"] == entry["parameter_count"] and meta["dataset"] == entry["dataset"]
    assert meta["config_hash"] == entry["recipe"]["config_hash"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_recipe_is_a_complete_config_and_metrics_are_coherent(entry):
    recipe = entry["recipe"]
    record = load_recorded(TrainConfig, recipe["config"], recipe["config_hash"], entry["name"])
    cfg = record.cfg
    # complete but for keys added after the decoders were built, whose defaults train exactly as before
    assert set(record.missing) <= ADDED_SINCE_BUILD
    assert cfg.seed == recipe["seed"] and cfg.device == "cpu"
    assert cfg.model.latent_dim == entry["latent_dim"] and cfg.data.name == entry["dataset"]
    assert recipe["vaezoo_version"] and recipe["eval"]["is_samples"] == entry["metrics"]["ll_is_samples"]
    assert entry["name"] in RECIPES
    m = entry["metrics"]
    # L_1 <= L_64 (in expectation; the gap on a test set is far above MC noise) and the IS estimate sits near L_64
    assert m["test_elbo"] < m["test_iwae_k64"] < 0
    assert m["test_ll_is"] >= m["test_iwae_k64"] - 0.5
    assert 0 < m["active_units"] <= entry["latent_dim"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_shipped_file_still_matches_torch(entry):
    """Recheck the shipped graph here, as `vaezoo pretrained check` does: onnxruntime against the torch decoder
    rebuilt from the file's own weights (the recorded parity only says it held where it was built)."""
    blob = (pretrained_dir() / entry["file"]).read_bytes()
    head = load_torch_decoder(onnx.load_from_string(blob))
    report = parity(blob, head, entry["latent_dim"], tolerance=float("inf"))  # measure only; the assert judges
    assert max(report["max_abs_diff"].values()) <= TOLERANCE["fp32"], report["max_abs_diff"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_each_shipped_decoder_samples_through_the_runtime(entry, tmp_path):
    dec = Decoder(entry["name"], cache=tmp_path)
    x = dec.sample(8, seed=0)
    assert x.shape == (8, *entry["output_shape"]) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.05  # probabilities, and not a constant image
    assert np.array_equal(x, dec.sample(8, seed=0))


def test_pretrained_command_lists_names_and_metrics(capsys):
    assert main(["pretrained"]) == 0
    out = capsys.readouterr().out
    for e in ENTRIES:
        assert e["name"] in out and f"{e['metrics']['test_elbo']:.2f}" in out
    assert main(["pretrained", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == load_manifest()["models"]


def test_compare_applies_the_stated_tolerance():
    shipped = {"test_elbo": -100.0, "test_ll_is": -95.0, "active_units": 20}
    tol = {"nats": 1.0, "active_units": 2}
    ok = compare(shipped, {"test_elbo": -100.9, "test_ll_is": -94.2, "active_units": 22}, tol)
    assert [r["ok"] for r in ok] == [True, True, True]
    bad = compare(shipped, {"test_elbo": -101.2, "test_ll_is": -95.0, "active_units": 17}, tol)
    assert [(r["metric"], r["ok"]) for r in bad] == [("test_elbo", False), ("test_ll_is", True), ("active_units", False)]


def test_reproduce_unknown_name_is_a_clear_error(capsys, tmp_path):
    assert main(["reproduce", "pretrained", "nosuch.thing", "--work-dir", str(tmp_path)]) == 2
    assert "unknown pretrained decoder" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_the_smallest_decoder(tmp_path, capsys):
    """Retrain mlp-vae.digits from its manifest recipe: metrics within tolerance (on this CPU: identical)."""
    assert main(["reproduce", "pretrained", "mlp-vae.digits", "--work-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "reproduced: mlp-vae.digits" in out
    rebuilt = Path(tmp_path) / "mlp-vae.digits" / "mlp-vae.digits.onnx"
    assert rebuilt.is_file()


def test_a_manifest_entry_is_a_strict_typed_record():
    from vaezoo.core.errors import VaezooError
    from vaezoo.pretrained import PretrainedEntry

    good = load_manifest()["models"][0]
    entry = PretrainedEntry.from_dict(good)
    assert entry.metrics.test_elbo == good["metrics"]["test_elbo"] and entry.training.torch_threads >= 1
    assert entry.output_shape == tuple(good["output_shape"])
    bad_cases = [
        ({**good, "sha265": "typo"}, "unknown config key 'sha265'"),
        ({k: v for k, v in good.items() if k != "sha256"}, "lacks sha256"),
        ({**good, "metrics": {**good["metrics"], "test_elbo": "high"}}, "'metrics.test_elbo' must be float"),
        ({**good, "metrics": {k: v for k, v in good["metrics"].items() if k != "active_units"}}, "metrics lacks active_units"),
        ({**good, "latent_dim": 32.5}, "'latent_dim' must be int"),
    ]
    for data, message in bad_cases:
        with pytest.raises(VaezooError, match=message) as info:
            PretrainedEntry.from_dict(data)
        assert str(info.value).startswith(f"manifest entry '{good['name']}'")
