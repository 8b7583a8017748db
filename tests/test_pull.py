"""vaezoo pull: shipped names, URL#sha256=HEX from a local http.server, models:/NAME@ALIAS from a local MLflow store."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.request
from pathlib import Path

import pytest

from vaezoo.cli import main
from vaezoo.core.errors import VaezooError
from vaezoo.runtime import cache as cache_mod
from vaezoo.runtime import check_name, parse_url
from vaezoo.tracking import registry
from vaezoo.tracking.registry import parse_registry_uri
from vaezoo.tracking.registry import pull_any as pull

PAYLOAD = bytes(range(256)) * 400  # 100 kB, several download chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/good.onnx":
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == "/unannounced.onnx":  # no Content-Length: the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        elif self.path == "/truncated.onnx":  # promises everything, sends half, hangs up
            self._send(PAYLOAD[: len(PAYLOAD) // 2], len(PAYLOAD))
            self.close_connection = True
        else:
            self.send_error(404, "not here")

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, httpd
    httpd.shutdown()
    httpd.server_close()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _entries(root: Path) -> list[Path]:
    """Files and folders: a failed pull must leave neither (not even an empty url/<sha256>/)."""
    return sorted(root.rglob("*")) if root.exists() else []


def test_good_file_is_cached_then_served_offline(server, tmp_path):
    base, httpd = server
    path = pull(f"{base}/good.onnx#sha256={SHA}", tmp_path)
    assert path == tmp_path / "url" / SHA / "good.onnx" and path.read_bytes() == PAYLOAD
    assert _files(tmp_path) == [path]  # no temp file left beside it
    httpd.shutdown()
    httpd.server_close()
    assert pull(f"{base}/good.onnx#sha256={SHA}", tmp_path) == path  # warm cache: no network needed
    with pytest.raises(VaezooError, match="download of .* failed"):
        pull(f"{base}/good.onnx#sha256={SHA}", tmp_path / "cold")


def test_wrong_hash_deletes_the_download_and_says_so(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(VaezooError, match=f"sha256 mismatch .* expected {wrong}, got {SHA}; the download was deleted"):
        pull(f"{server[0]}/good.onnx#sha256={wrong}", tmp_path)
    assert _entries(tmp_path) == []


def test_truncated_download_leaves_nothing(server, tmp_path):
    with pytest.raises(VaezooError, match=r"cut short \(51200 of 102400 bytes\)"):
        pull(f"{server[0]}/truncated.onnx#sha256={SHA}", tmp_path)
    assert _entries(tmp_path) == []


def test_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(VaezooError, match="HTTP 404"):
        pull(f"{server[0]}/missing.onnx#sha256={SHA}", tmp_path)
    assert _entries(tmp_path) == []


def test_interrupted_download_leaves_nothing_half_written(server, tmp_path, monkeypatch):
    real = urllib.request.urlopen

    class _Interrupting:
        def __init__(self, resp):
            self.resp, self.headers, self.calls = resp, resp.headers, 0

        def read(self, n):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt  # Ctrl-C after the first chunk reached the temp file
            return self.resp.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.resp.close()

    monkeypatch.setattr(cache_mod.urllib.request, "urlopen", lambda *a, **k: _Interrupting(real(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        pull(f"{server[0]}/good.onnx#sha256={SHA}", tmp_path)
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("path", ["/good.onnx", "/unannounced.onnx"])
def test_a_download_past_max_bytes_is_refused_and_leaves_nothing(server, tmp_path, path):
    with pytest.raises(VaezooError, match=r"exceeds the limit of 50000 bytes \(max_bytes\); nothing was cached"):
        pull(f"{server[0]}{path}#sha256={SHA}", tmp_path, max_bytes=50_000)
    assert _entries(tmp_path) == []
    assert pull(f"{server[0]}{path}#sha256={SHA}", tmp_path, max_bytes=len(PAYLOAD)).read_bytes() == PAYLOAD


def test_a_failed_pull_through_the_command_is_one_line_and_leaves_the_cache_as_it_was(server, tmp_path):
    import os
    import subprocess
    import sys

    cache = tmp_path / "cache"
    (cache / "url").mkdir(parents=True)  # an existing cache folder stays
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "vaezoo.runtime", "pull", f"{server[0]}/good.onnx#sha256={'0' * 64}",
                           "--cache-dir", str(cache)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: sha256 mismatch")
    assert _entries(cache) == [cache / "url"]


def test_corrupt_cache_entry_is_replaced(server, tmp_path):
    spec = f"{server[0]}/good.onnx#sha256={SHA}"
    path = pull(spec, tmp_path)
    path.write_bytes(b"bit rot")
    assert pull(spec, tmp_path).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("http://127.0.0.1:1/x.onnx", "#sha256="),
        ("http://127.0.0.1:1/x.onnx#sha256=abc", "#sha256="),
        ("http://127.0.0.1:1/x.onnx#md5=" + "0" * 32, "#sha256="),
        ("ftp://host/x.onnx#sha256=" + SHA, "unsupported scheme"),
        ("../../etc/passwd", "invalid decoder name"),
        ("mlp/vae.mnist5k", "invalid decoder name"),
        ("MLP-VAE.mnist5k", "invalid decoder name"),
        ("novae", "invalid decoder name"),
        ("a.b.c", "invalid decoder name"),
        ("", "nothing to pull"),
        ("nosuch.model", "unknown pretrained decoder 'nosuch.model'"),
        ("models:/../x@a", "invalid registry URI"),
        ("models:/name", "invalid registry URI"),
        ("models:/name@bad alias", "invalid registry URI"),
    ],
)
def test_bad_specs_are_refused_before_any_file_is_touched(spec, message, tmp_path):
    with pytest.raises(VaezooError, match=message):
        pull(spec, tmp_path)
    assert _files(tmp_path) == []


def test_url_file_names_cannot_escape_the_cache():
    url, sha, name = parse_url(f"http://h/a/..%2F..%2Fevil.onnx#sha256={SHA.upper()}")
    assert sha == SHA and name == "decoder.onnx" and url == "http://h/a/..%2F..%2Fevil.onnx"
    assert parse_url(f"https://h/d/m.onnx?v=2#sha256={SHA}")[::2] == ("https://h/d/m.onnx?v=2", "m.onnx")
    assert check_name("conv-vae.mnist5k") == "conv-vae.mnist5k"
    assert parse_registry_uri("models:/vae-decoder@champion") == ("vae-decoder", "champion", None)
    assert parse_registry_uri("models:/vae-decoder/3") == ("vae-decoder", None, "3")


def test_shipped_name_resolves_into_the_cache(tmp_path, monkeypatch):
    from vaezoo.runtime import list_pretrained

    entries = list_pretrained()
    if not entries:
        pytest.fail("no pretrained decoders shipped")
    monkeypatch.setenv("VAEZOO_CACHE", str(tmp_path))
    entry = entries[-1]
    path = pull(entry.name)
    assert path == tmp_path / "pretrained" / f"{entry.name}.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    path.write_bytes(b"corrupt")
    assert hashlib.sha256(pull(entry.name).read_bytes()).hexdigest() == entry.sha256


@pytest.mark.parametrize("how", ["a file where the folder should be", "a read-only folder"])
def test_a_shipped_decoder_loads_from_its_packaged_copy_when_the_cache_cannot_be_written(tmp_path, how):
    """As in a read-only container: the hash-checked copy in the package serves, through the real command."""
    import os
    import subprocess
    import sys

    from vaezoo.runtime import list_pretrained
    from vaezoo.runtime.catalog import pretrained_dir

    name = list_pretrained()[0].name
    if how == "a read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; the other case covers this run")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        cache = tmp_path / "ro" / "cache"
    else:
        (tmp_path / "blocker").write_text("not a folder")
        cache = tmp_path / "blocker" / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "VAEZOO_CACHE": str(cache)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "vaezoo.runtime", *args], capture_output=True,
                                       text=True, env=env, cwd=tmp_path)
    pulled = run("pull", name)
    assert pulled.returncode == 0, pulled.stderr
    assert Path(pulled.stdout.strip()).parent == pretrained_dir()
    sample = run("sample", name, "-n", "4", "--out", "g.png")
    assert sample.returncode == 0, sample.stderr
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
    assert not cache.exists()


def test_a_corrupt_packaged_copy_is_refused_even_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    import importlib

    from vaezoo.runtime import list_pretrained

    pull_mod = importlib.import_module("vaezoo.runtime.pull")  # the package's `pull` attribute is the function
    entry = list_pretrained()[0]
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / entry.file).write_bytes(b"tampered")
    monkeypatch.setattr(pull_mod, "pretrained_dir", lambda: fake)
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(VaezooError, match="the file is corrupt"):
        pull(entry.name, tmp_path / "blocker" / "cache")


def test_cli_pull(server, tmp_path, capsys):
    assert main(["pull", f"{server[0]}/good.onnx#sha256={SHA}", "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "url" / SHA / "good.onnx")
    assert main(["pull", "../evil", "--cache-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: invalid decoder name")


def test_export_register_then_pull_by_alias_from_a_local_mlflow_store(tmp_path, monkeypatch, capsys):

    from vaezoo.data.datasets import DATASET_SHAPES
    from vaezoo.training.config import resolve_config
    from vaezoo.training.loop import train

    user = {"model": {"name": "vae", "hidden": [16], "latent_dim": 3}, "data": {"name": "digits"}, "steps": 5,
            "batch_size": 32, "eval_every": 5, "checkpoint_every": 5, "device": "cpu", "eval_k": 2}
    train(resolve_config(user, DATASET_SHAPES["digits"]), tmp_path / "run", track=False, progress=False)
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    onnx_path = tmp_path / "dec.onnx"
    argv = ["export", str(tmp_path / "run"), "--out", str(onnx_path), "--register", "tiny-decoder", "--alias", "champion",
            "--tracking-uri", uri]
    assert main(argv) == 0
    assert "registered: models:/tiny-decoder@champion (version 1" in capsys.readouterr().out
    cache = tmp_path / "cache"
    path = pull("models:/tiny-decoder@champion", cache, tracking_uri=uri)
    assert path == cache / "mlflow" / "tiny-decoder" / "v1" / "decoder.onnx"
    assert path.read_bytes() == onnx_path.read_bytes()  # the registry holds the exported bytes
    assert pull("models:/tiny-decoder/1", cache, tracking_uri=uri) == path
    with pytest.raises(VaezooError, match="no model version tiny-decoder@nosuch"):
        pull("models:/tiny-decoder@nosuch", cache, tracking_uri=uri)

    real = registry.download_registered_model

    def tampered(*args, **kwargs):
        local, meta = real(*args, **kwargs)
        return local, {**meta, "tags": {**meta["tags"], registry.SHA256_TAG: "f" * 64}}

    monkeypatch.setattr(registry, "download_registered_model", tampered)
    with pytest.raises(VaezooError, match="sha256 mismatch for models:/tiny-decoder@champion"):
        pull("models:/tiny-decoder@champion", tmp_path / "cache2", tracking_uri=uri)
    assert _files(tmp_path / "cache2") == []
