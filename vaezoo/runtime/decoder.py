"""``Decoder``: sample images from an exported vaezoo decoder with onnxruntime and numpy.

The ONNX graph maps ``z`` [N, latent_dim] float32 to ``x`` [N, *output_shape] float32 (probabilities for
Bernoulli decoders, means for Gaussian ones). z for ``sample`` comes from ``numpy.random.default_rng(seed)``,
so a seed gives the same z everywhere, and the same images bit for bit on the same CPU and provider
(elsewhere they agree to float rounding).
Safe to share between threads: it holds no mutable state, and ``InferenceSession.run`` may be called
concurrently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vaezoo.core.errors import VaezooError

MAX_BATCH = 1 << 16  # 65,536 images of 28x28 are 205 MB of float32; larger requests are almost surely a bug
METADATA_PREFIX = "vaezoo."
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu can use it, then the CPU (other installed providers are opt-in)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available]


def parse_metadata(props: dict[str, str]) -> dict:
    """The ``vaezoo.*`` metadata_props of a model, prefix stripped, values JSON-decoded."""
    out = {}
    for key, value in props.items():
        if key.startswith(METADATA_PREFIX):
            try:
                out[key[len(METADATA_PREFIX) :]] = json.loads(value)
            except json.JSONDecodeError:
                out[key[len(METADATA_PREFIX) :]] = value
    return out


def _resolve(source: str | os.PathLike, cache: str | os.PathLike | None) -> Path:
    text = str(source)
    if not text.startswith(("http://", "https://", "models:/")):
        path = Path(source)
        if path.suffix == ".onnx" or path.is_file() or os.sep in text:
            if not path.is_file():
                raise VaezooError(f"no decoder file at '{path}'")
            return path
    from vaezoo.runtime.pull import pull

    return pull(text, cache)


class Decoder:
    """An exported decoder: ``decode(z)``, ``sample(n, seed=)``, ``metadata``.

    ``source`` is a .onnx file, a shipped decoder name (``mlp-vae.mnist5k``) or a ``URL#sha256=HEX``.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        max_batch: int = MAX_BATCH,
        cache: str | os.PathLike | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = _resolve(source, cache)
        available = ort.get_available_providers()
        providers = list(providers) if providers is not None else default_providers()
        unknown = [p for p in providers if p not in available]
        if unknown or not providers:
            raise VaezooError(f"execution provider(s) {unknown or providers} not available; available: {', '.join(available)}")
        opts = ort.SessionOptions()
        for name, value in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise VaezooError(f"{name} must be an int >= 0 (0: onnxruntime's default), got {value!r}")
        if intra_op_threads is not None:
            opts.intra_op_num_threads = intra_op_threads
        if inter_op_threads is not None:
            opts.inter_op_num_threads = inter_op_threads
        if not isinstance(max_batch, int) or max_batch < 1:
            raise VaezooError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.max_batch = max_batch
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise VaezooError(f"cannot load '{self.path}' as an ONNX decoder: {str(exc).splitlines()[0]}") from None
        self.metadata = parse_metadata(self._session.get_modelmeta().custom_metadata_map)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != ["z"] or "x" not in [o.name for o in outputs]:
            kind = " (a sampler graph: run it with onnxruntime directly)" if [i.name for i in inputs] == ["n"] else ""
            raise VaezooError(f"'{self.path}' is not a vaezoo decoder graph (input 'z', output 'x'){kind}")
        z_shape = inputs[0].shape
        if len(z_shape) != 2 or not isinstance(z_shape[1], int):
            raise VaezooError(f"'{self.path}': input z must be [N, latent_dim], got {z_shape}")
        self.latent_dim: int = z_shape[1]
        self.output_shape: tuple[int, ...] = tuple(self.metadata.get("output_shape") or outputs[0].shape[1:])

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, in priority order."""
        return self._session.get_providers()

    def __repr__(self) -> str:
        return f"Decoder('{self.path}', latent_dim={self.latent_dim}, output_shape={self.output_shape}, providers={self.providers})"

    def _check_batch(self, n: int, what: str) -> None:
        if n < 1:
            raise VaezooError(f"{what} must be >= 1, got {n}")
        if n > self.max_batch:
            raise VaezooError(f"{what} = {n} exceeds max_batch = {self.max_batch}; decode in chunks or raise max_batch")

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images x [N, *output_shape] (float32) for latents z [N, latent_dim] (float32, finite)."""
        if not isinstance(z, np.ndarray):
            raise VaezooError(f"z must be a numpy array, got {type(z).__name__}")
        if z.dtype != np.float32:
            raise VaezooError(f"z must be float32, got {z.dtype} (use z.astype(np.float32))")
        if z.ndim != 2:
            raise VaezooError(f"z must be 2-D [N, {self.latent_dim}], got shape {z.shape}")
        if z.shape[1] != self.latent_dim:
            raise VaezooError(f"z has {z.shape[1]} latent dimensions; this decoder takes {self.latent_dim}")
        self._check_batch(z.shape[0], "batch size N")
        if not np.isfinite(z).all():
            raise VaezooError("z contains NaN or inf")
        return self._session.run(["x"], {"z": np.ascontiguousarray(z)})[0]

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """n images from z ~ N(0, I) drawn by ``numpy.random.default_rng(seed)`` (same seed, same images)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise VaezooError(f"n must be an int, got {n!r}")
        self._check_batch(int(n), "n")
        if seed is not None and not isinstance(seed, np.random.Generator) and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
        ):
            raise VaezooError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        z = rng.standard_normal((int(n), self.latent_dim), dtype=np.float32)
        return self.decode(z)
