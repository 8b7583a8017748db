"""vaezoo.runtime: numpy + onnxruntime only; Decoder decodes, samples reproducibly, validates, is thread-safe."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.export import export_model
from vaezoo.core.errors import VaezooError
from vaezoo.core.png import encode_png
from vaezoo.models import get_model
from vaezoo.runtime import Decoder, cache_dir, default_providers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_and_file(tmp_path_factory):
    torch.manual_seed(0)
    model = get_model("vae", hidden=[48], latent_dim=6, input_shape=[1, 8, 8]).eval()
    path = tmp_path_factory.mktemp("rt") / "dec.onnx"
    export_model(model, path, extra_metadata={"dataset": "digits"})
    return model, path


@pytest.fixture(scope="module")
def dec(model_and_file):
    return Decoder(model_and_file[1], intra_op_threads=1)


def _isolated_env(tmp_path: Path) -> dict:
    return {**os.environ, "VAEZOO_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}


def test_importing_and_using_the_runtime_pulls_in_neither_torch_nor_mlflow(model_and_file, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import vaezoo.runtime
        from vaezoo.runtime import Decoder
        from vaezoo.core.png import save_grid
        save_grid({str(tmp_path / "g.png")!r}, Decoder({str(model_and_file[1])!r}).sample(4, seed=0))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mlflow", "onnx", "click", "PIL", "pooch"))
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_isolated_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def test_decode_matches_torch_and_metadata_is_decoded(dec, model_and_file):
    model, _ = model_and_file
    z = np.random.default_rng(3).standard_normal((33, 6), dtype=np.float32)
    with torch.no_grad():
        ref = torch.sigmoid(model.decode(torch.from_numpy(z))).numpy()
    x = dec.decode(z)
    assert x.dtype == np.float32 and x.shape == (33, 1, 8, 8)
    assert np.abs(x - ref).max() <= 1e-5
    assert dec.latent_dim == 6 and dec.output_shape == (1, 8, 8)
    assert dec.metadata["latent_dim"] == 6 and dec.metadata["dataset"] == "digits"
    assert dec.metadata["model_config"]["hidden"] == [48]


def test_sample_is_reproducible_by_seed(dec):
    a, b, c = dec.sample(16, seed=42), dec.sample(16, seed=42), dec.sample(16, seed=43)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    z = np.random.default_rng(42).standard_normal((16, 6), dtype=np.float32)
    assert np.array_equal(a, dec.decode(z))  # documented: z from numpy's default_rng(seed)
    assert np.array_equal(dec.sample(5, seed=np.random.default_rng(42)), dec.decode(z[:5]))


@pytest.mark.parametrize(
    ("z", "message"),
    [
        ([[0.0] * 6], "numpy array"),
        (np.zeros((2, 6), dtype=np.float64), "float32"),
        (np.zeros((2, 6), dtype=np.int32), "float32"),
        (np.zeros(6, dtype=np.float32), "2-D"),
        (np.zeros((1, 2, 6), dtype=np.float32), "2-D"),
        (np.zeros((2, 5), dtype=np.float32), "5 latent dimensions; this decoder takes 6"),
        (np.zeros((0, 6), dtype=np.float32), ">= 1"),
        (np.array([[0, 0, np.nan, 0, 0, 0]], dtype=np.float32), "NaN or inf"),
        (np.array([[0, 0, 0, np.inf, 0, 0]], dtype=np.float32), "NaN or inf"),
    ],
)
def test_decode_rejects_bad_z(dec, z, message):
    with pytest.raises(VaezooError, match=message):
        dec.decode(z)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, ">= 1"),
        ({"n": -3}, ">= 1"),
        ({"n": 2.5}, "must be an int"),
        ({"n": True}, "must be an int"),
        ({"n": "8"}, "must be an int"),
        ({"n": 10**9}, "exceeds max_batch"),
        ({"n": 4, "seed": "x"}, "seed must be"),
    ],
)
def test_sample_rejects_bad_requests(dec, kwargs, message):
    with pytest.raises(VaezooError, match=message):
        dec.sample(**kwargs)


def test_max_batch_and_threads_and_providers_are_configurable(model_and_file):
    path = model_and_file[1]
    small = Decoder(path, max_batch=8, intra_op_threads=1, inter_op_threads=1)
    assert small.sample(8, seed=0).shape[0] == 8
    with pytest.raises(VaezooError, match="exceeds max_batch = 8"):
        small.sample(9)
    assert default_providers()[-1] == "CPUExecutionProvider"
    assert Decoder(path, providers=["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]
    with pytest.raises(VaezooError, match="not available"):
        Decoder(path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(VaezooError, match="intra_op_threads"):
        Decoder(path, intra_op_threads=-1)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(VaezooError, match="no decoder file"):
        Decoder(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(VaezooError, match="cannot load"):
        Decoder(junk)


def test_sixteen_threads_share_one_decoder(dec):
    jobs = [(8 + i % 5, i) for i in range(64)]
    expected = [dec.sample(n, seed=s) for n, s in jobs]
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(lambda job: dec.sample(job[0], seed=job[1]), jobs))
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_cache_dir_follows_env_then_platformdirs(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv("VAEZOO_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("VAEZOO_CACHE")
    assert cache_dir() == Path(platformdirs.user_cache_dir("vaezoo", appauthor=False))


def test_png_encoder_round_trips_through_pillow():
    from PIL import Image

    rng = np.random.default_rng(0)
    for shape in ((5, 9), (4, 3, 3)):
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(a)))), a)


def test_runtime_main_writes_a_grid_of_samples(model_and_file, tmp_path):
    out = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, "-m", "vaezoo.runtime", "sample", str(model_and_file[1]), "-n", "64",
                           "--out", str(out)], capture_output=True, text=True, env=_isolated_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    img = Image.open(out)
    assert img.size == (2 * (8 * 9 + 1), 2 * (8 * 9 + 1))  # 8x8 grid of 8x8 images, 1-pixel pad, scale 2
    bad = subprocess.run([sys.executable, "-m", "vaezoo.runtime", "sample", str(model_and_file[1]), "-n", "0"],
                         capture_output=True, text=True, env=_isolated_env(tmp_path))
    assert bad.returncode == 2 and bad.stderr.startswith("error: n must be >= 1")


def test_bench_sampling_writes_rows_for_each_backend(model_and_file, tmp_path):
    from vaezoo.bench.sampling import sampling_bench

    rows, path, _ = sampling_bench([str(model_and_file[1])], [1, 3], ["ort-fp32", "ort-int8", "torch"], threads=1,
                                   min_time=0.01, warmup=0.0, out_dir=tmp_path, track=False, rounds=2)
    assert {(r["backend"], r["batch"]) for r in rows} == {(b, n) for b in ("ort-fp32", "ort-int8", "torch") for n in (1, 3)}
    assert all(r["p50_ms"] > 0 for r in rows)
    assert all(0 < r["max_abs_err_vs_fp32"] < 0.02 for r in rows if r["backend"] == "ort-int8")
    with open(path) as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_bench_sampling_backends_take_turns_one_at_a_time(model_and_file, tmp_path):
    """The workers' own clocks (system-wide monotonic) show, per batch: one window at a time, and in each round every
    backend once, so no backend's measurements all come from one stretch of the machine's load."""
    from vaezoo.bench.sampling import sampling_bench

    backends = ["ort-fp32", "ort-int8", "torch"]
    _, _, schedule = sampling_bench([str(model_and_file[1])], [1, 3], backends, threads=1, min_time=0.03,
                                    warmup=0.0, out_dir=tmp_path, track=False, rounds=3)
    for b in (1, 3):
        windows = sorted((w for w in schedule if w["batch"] == b), key=lambda w: w["start"])
        assert len(windows) == 3 * len(backends)
        assert all(a["end"] <= c["start"] for a, c in zip(windows, windows[1:]))  # never two at once
        for r in range(3):
            assert sorted(w["backend"] for w in windows[3 * r: 3 * r + 3]) == sorted(backends)
            assert all(w["round"] == r for w in windows[3 * r: 3 * r + 3])
        assert all(w["threads"] == 1 for w in windows)


def test_bench_sampling_command_names_the_threads_in_every_row(model_and_file, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vaezoo.cli", "bench", "sampling", "--decoder", str(model_and_file[1]),
                           "--batches", "1,2", "--backends", "ort-fp32,torch", "--min-time", "0.01", "--warmup", "0",
                           "--no-track", "--out-dir", str(tmp_path)], capture_output=True, text=True,
                          env=_isolated_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["decoder", "backend", "batch", "threads"]
    table = [ln.split() for ln in lines[1:5]]
    assert sorted((r[1], r[2], r[3]) for r in table) == [("ort-fp32", "1", "1"), ("ort-fp32", "2", "1"),
                                                          ("torch", "1", "1"), ("torch", "2", "1")]
    assert sum("1 thread(s) each: onnxruntime fp32 / torch eager" in ln for ln in lines) == 2
    (csv_path,) = tmp_path.glob("sampling-*-t1.csv")
    with open(csv_path) as fh:
        assert [(r["threads"], r["windows"]) for r in csv.DictReader(fh)] == [("1", "5")] * 4


LOCAL_INDEX = ["--index-url", "file:///opt/pypi/simple", "--extra-index-url", "file:///opt/pypi-more/simple"]


def _pip(python: Path, args: list[str]) -> subprocess.CompletedProcess:
    """pip from the local wheel index when this machine has one, else pip's own configuration (PyPI)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if Path("/opt/pypi/simple").is_dir():
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *LOCAL_INDEX, *args], capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            return proc
    return subprocess.run([str(python), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_fresh_venv_with_only_the_runtime_install_pulls_and_samples(tmp_path):
    """The service install: vaezoo without its dependencies, plus numpy and onnxruntime; no torch anywhere."""
    import shutil

    from vaezoo.runtime import pretrained_entry

    name = "mlp-vae.mnist5k"  # the decoder the issue names
    pretrained_entry(name)  # shipped: a clear error here, not a failed pull in the venv below
    src = tmp_path / "src"  # build from a copy, so the shared checkout gets no build/ or egg-info
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("vaezoo", "exporters"):
        shutil.copytree(ROOT / part, src / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        if (ROOT / part).is_file():
            shutil.copy(ROOT / part, src / part)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    deps = _pip(python, ["numpy", "onnxruntime"])
    if deps.returncode != 0:  # no index reachable from here: nothing to test with
        pytest.skip(f"cannot install numpy and onnxruntime into a fresh venv here: {deps.stderr.strip()[-300:]}")
    own = _pip(python, ["--no-deps", str(src)])  # the index answered above: a failure here is vaezoo's packaging
    assert own.returncode == 0, own.stderr
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "VAEZOO_CACHE": str(tmp_path / "cache")}
    has_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, env=env, cwd=tmp_path)
    assert has_torch.returncode != 0, "torch must not be installed in the runtime venv"
    pulled = subprocess.run([str(python), "-m", "vaezoo.runtime", "pull", name], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert Path(pulled.stdout.strip()).is_relative_to(tmp_path / "cache")
    out = tmp_path / "grid.png"
    sample = subprocess.run([str(python), "-m", "vaezoo.runtime", "sample", name, "-n", "64", "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    code = ("import sys; from vaezoo.runtime import Decoder; x = Decoder(sys.argv[1]).sample(64, seed=0); "
            "assert x.shape[0] == 64 and 0 <= x.min() and x.max() <= 1; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mlflow', 'onnx')))")
    check = subprocess.run([str(python), "-c", code, name], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "[]"


# ---------------------------------------------------------------- issue 15: names, seeds, graph vs metadata

SHIPPED = "mlp-vae.mnist5k"  # 28x28 images, latent 32; the module's test decoder makes 8x8 images, latent 6


def _runtime(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaezoo.runtime", *args], capture_output=True, text=True,
                          env={**_isolated_env(tmp_path), **env}, cwd=tmp_path)


def _grid_side(n: int, side: int) -> int:
    """Width of the PNG grid the runtime writes for n square images of this side (ceil(sqrt(n)) per row)."""
    ncol = int(np.ceil(np.sqrt(n)))
    return 2 * (ncol * (side + 1) + 1)


def test_a_local_file_named_like_a_shipped_decoder_never_stands_in_for_it(model_and_file, tmp_path):
    """A bare name is a shipped name: a file of that name in the working folder (here a valid decoder of another
    shape) is not loaded; './NAME' loads the file."""
    from PIL import Image

    (tmp_path / SHIPPED).write_bytes(model_and_file[1].read_bytes())
    proc = _runtime(["sample", SHIPPED, "-n", "4", "--out", "shipped.png"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "shipped.png").size == (_grid_side(4, 28),) * 2
    assert Decoder(SHIPPED, cache=tmp_path / "cache").latent_dim == 32  # the library too (cwd is tmp_path)
    local = _runtime(["sample", f"./{SHIPPED}", "-n", "4", "--out", "local.png"], tmp_path)
    assert local.returncode == 0, local.stderr
    assert Image.open(tmp_path / "local.png").size == (_grid_side(4, 8),) * 2


def test_a_bare_file_name_that_is_no_shipped_name_says_how_to_load_the_file(model_and_file, tmp_path):
    (tmp_path / "mine.decoder").write_bytes(model_and_file[1].read_bytes())
    proc = _runtime(["sample", "mine.decoder", "-n", "4"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: unknown pretrained decoder 'mine.decoder'") and "./mine.decoder" in proc.stderr


def test_a_negative_seed_is_one_clear_error(dec, model_and_file, tmp_path):
    for seed in (-1, np.int64(-5)):
        with pytest.raises(VaezooError, match="seed must be >= 0"):
            dec.sample(4, seed=seed)
    proc = _runtime(["sample", str(model_and_file[1]), "-n", "4", "--seed", "-1"], tmp_path)
    assert proc.returncode == 2 and proc.stderr == "error: seed must be >= 0, got -1\n"
    assert not (tmp_path / "samples.png").exists()


def test_providers_and_threads_are_options_of_the_runtime_command(model_and_file, tmp_path):
    proc = _runtime(["sample", str(model_and_file[1]), "-n", "4", "--providers", "CPUExecutionProvider",
                     "--threads", "1", "--out", "p.png"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    bad = _runtime(["sample", str(model_and_file[1]), "--providers", "NoSuchExecutionProvider"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: execution provider(s) ['NoSuchExecutionProvider']")


def _edited(path: Path, out: Path, batch: int | None = None, metadata: dict | None = None) -> Path:
    """A copy of an exported decoder with a static batch and/or edited vaezoo.* metadata."""
    import json

    import onnx

    proto = onnx.load(str(path))
    if batch is not None:
        for arg in (proto.graph.input[0], proto.graph.output[0]):
            arg.type.tensor_type.shape.dim[0].dim_value = batch  # replaces the dim_param 'batch'
    for key, value in (metadata or {}).items():
        entry = next(p for p in proto.metadata_props if p.key == f"vaezoo.{key}")
        entry.value = json.dumps(value)
    onnx.save(proto, str(out))
    return out


def test_a_graph_with_a_static_batch_is_refused_at_load(model_and_file, tmp_path):
    static = _edited(model_and_file[1], tmp_path / "static.onnx", batch=1)
    with pytest.raises(VaezooError, match=r"input z has a fixed batch of 1 .*dynamic batch dimension"):
        Decoder(static)
    proc = _runtime(["sample", str(static), "-n", "16"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "fixed batch of 1" in proc.stderr


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"output_shape": [3, 8, 8]}, r"metadata output_shape \(3, 8, 8\) disagrees with the graph's output x"),
        ({"output_shape": [64]}, r"metadata output_shape \(64,\) disagrees"),
        ({"output_shape": "1x8x8"}, "metadata output_shape must be a list of positive ints"),
        ({"latent_dim": 7}, "metadata latent_dim 7 disagrees with the graph's input z"),
    ],
)
def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(model_and_file, tmp_path, metadata, message):
    with pytest.raises(VaezooError, match=message):
        Decoder(_edited(model_and_file[1], tmp_path / "edited.onnx", metadata=metadata))


def test_a_graph_that_returns_other_than_it_declares_is_refused_at_load(tmp_path):
    """Declared [batch, 2] -> [batch, 1, 2, 1] and so in the metadata, but reshaped to [batch, 2, 1, 1] inside (the
    shape is computed: onnxruntime then reports the output's dims as unknown): only decoding finds it."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["z"], ["batch"], end=1),
        helper.make_node("Concat", ["batch", "rest"], ["shape"], axis=0),
        helper.make_node("Reshape", ["z", "shape"], ["x"]),
    ]
    graph = helper.make_graph(
        nodes, "computed-shape",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 1])],
        [helper.make_tensor("rest", TensorProto.INT64, [3], [2, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"vaezoo.output_shape": "[1, 2, 1]"})
    onnx.save(model, str(tmp_path / "r.onnx"))
    with pytest.raises(VaezooError, match=r"for a batch of 2 the graph returned x float32 \(2, 2, 1, 1\); it declares .* and its metadata output_shape \(1, 2, 1\)"):
        Decoder(tmp_path / "r.onnx")
