"""``Decoder``: sample images from an exported vaezoo decoder with onnxruntime and numpy.

The ONNX graph maps ``z`` [N, latent_dim] float32 to ``x`` [N, *output_shape] float32 (probabilities for
Bernoulli decoders, means for Gaussian ones). z for ``sample`` comes from ``numpy.random.default_rng(seed)``:
N(0, I), or, for a decoder whose metadata carries a prior mixture (the VampPrior, ``vaezoo.prior``: C uniform-weight
diagonal Gaussians, their means and scales [C][d] computed at export), a component uniformly and then its Gaussian
(``sample_mixture``). A seed gives the same z everywhere, and the same images bit for bit on the same CPU and provider
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


URL_PREFIXES = ("http://", "https://", "models:/")


def is_path(source: str | os.PathLike) -> bool:
    """True when ``source`` names a file: a path object, or a string with a folder separator or ending in
    ``.onnx``. Anything else is a shipped name or a URL: a stray local file named like a shipped decoder must
    never stand in for its hash-checked copy, so a bare name is never looked up in the working folder."""
    if isinstance(source, os.PathLike):
        return True
    text = str(source)
    if text.startswith(URL_PREFIXES) or "://" in text:
        return False
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(sep in text for sep in separators) or text.lower().endswith(".onnx")


def _resolve(source: str | os.PathLike, cache: str | os.PathLike | None) -> Path:
    if is_path(source):
        path = Path(source)
        if not path.is_file():
            raise VaezooError(f"no decoder file at '{path}'")
        return path
    from vaezoo.runtime.pull import pull

    text = str(source)
    try:
        return pull(text, cache)
    except VaezooError as exc:
        if Path(text).is_file():  # the user most likely meant the file: say how to ask for it
            raise VaezooError(f"{exc} (to load the file '{text}' here, write './{text}')") from None
        raise


class Decoder:
    """An exported decoder: ``decode(z)``, ``sample(n, seed=)``, ``metadata``.

    ``source`` is a file (a path object, or a string that contains a '/' or ends in ``.onnx``), a shipped
    decoder name (``mlp-vae.mnist5k``) or a ``URL#sha256=HEX``; names and URLs resolve to hash-checked files.
    ``providers`` (default: CUDA if usable, then CPU) and the thread counts go to onnxruntime's session.
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
        self.latent_dim, self.output_shape = _check_interface(self._session, self.metadata, self.path)
        # (means, scales) [C, d] float32 of a mixture prior, or None for N(0, I)
        self.prior = _read_prior(self.metadata.get("prior"), self.latent_dim, self.path)

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
        """n images from z ~ p(z) drawn by ``numpy.random.default_rng(seed)`` (same seed, same images): N(0, I), or
        the mixture in the metadata (``self.prior``) by ``sample_mixture``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise VaezooError(f"n must be an int, got {n!r}")
        self._check_batch(int(n), "n")
        if seed is not None and not isinstance(seed, np.random.Generator) and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
        ):
            raise VaezooError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
        if seed is not None and not isinstance(seed, np.random.Generator) and seed < 0:
            raise VaezooError(f"seed must be >= 0, got {seed}")  # numpy's SeedSequence refuses negative seeds
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if self.prior is not None:
            return self.decode(sample_mixture(*self.prior, int(n), rng))
        z = rng.standard_normal((int(n), self.latent_dim), dtype=np.float32)
        return self.decode(z)


def sample_mixture(means: np.ndarray, scales: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """z [n, d] float32 from (1/C) sum_c N(means[c], diag scales[c]^2): for each row a component c uniformly
    (``rng.integers``), then means[c] + scales[c] * eps with eps ~ N(0, I) (``rng.standard_normal``), in that order."""
    c = rng.integers(means.shape[0], size=n)
    eps = rng.standard_normal((n, means.shape[1]), dtype=np.float32)
    return means[c] + scales[c] * eps


def _read_prior(prior, latent_dim: int, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The mixture of a ``vaezoo.prior`` metadata entry, checked: finite means, positive finite scales, [C, d]."""
    if prior is None:
        return None
    try:
        if prior["kind"] != "mixture" or prior["weights"] != "uniform":
            raise ValueError(f"kind {prior['kind']!r} with weights {prior['weights']!r}")
        means = np.asarray(prior["means"], dtype=np.float32)
        scales = np.asarray(prior["scales"], dtype=np.float32)
    except (TypeError, KeyError, ValueError) as exc:
        raise VaezooError(f"'{path}': metadata prior is not a uniform mixture of means and scales ({exc})") from None
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] != latent_dim or scales.shape != means.shape \
            or not np.isfinite(means).all() or not (np.isfinite(scales) & (scales > 0)).all():
        raise VaezooError(f"'{path}': metadata prior needs means and scales [C, {latent_dim}] (finite, scales > 0); "
                          f"got means {means.shape}, scales {scales.shape}")
    return means, scales


def _fixed(dim) -> bool:
    """A static dimension (onnxruntime reports a dynamic one as its name, or None)."""
    return isinstance(dim, int)


def _check_interface(session, metadata: dict, path: Path) -> tuple[int, tuple[int, ...]]:
    """(latent_dim, output_shape) of a decoder graph, after checking its declared inputs and outputs against the
    vaezoo interface and its metadata, then decoding a batch of 2 (so a graph that loads also samples, and
    ``output_shape`` is what ``decode`` returns, not what the metadata claims)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["z"] or "x" not in [o.name for o in outputs]:
        kind = " (a sampler graph: run it with onnxruntime directly)" if [i.name for i in inputs] == ["n"] else ""
        raise VaezooError(f"'{path}' is not a vaezoo decoder graph (input 'z', output 'x'){kind}")
    z = inputs[0]
    x = next(o for o in outputs if o.name == "x")
    for name, arg in (("input z", z), ("output x", x)):
        if arg.type != "tensor(float)":
            raise VaezooError(f"'{path}': {name} must be float32, the graph declares {arg.type}")
        if not arg.shape or _fixed(arg.shape[0]):
            raise VaezooError(f"'{path}': {name} has a fixed batch of {arg.shape[0] if arg.shape else 'none'} "
                              f"(shape {arg.shape}); a vaezoo decoder has a dynamic batch dimension: re-export it")
    if len(z.shape) != 2 or not _fixed(z.shape[1]) or z.shape[1] < 1:
        raise VaezooError(f"'{path}': input z must be [batch, latent_dim], got {z.shape}")
    latent_dim = z.shape[1]
    if "latent_dim" in metadata and metadata["latent_dim"] != latent_dim:
        raise VaezooError(f"'{path}': metadata latent_dim {metadata['latent_dim']!r} disagrees with the graph's "
                          f"input z {z.shape}")
    declared = x.shape[1:]
    claimed = metadata.get("output_shape")
    if claimed is not None:
        if not isinstance(claimed, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                    for d in claimed):
            raise VaezooError(f"'{path}': metadata output_shape must be a list of positive ints, got {claimed!r}")
        if len(claimed) != len(declared) or any(_fixed(g) and g != c for g, c in zip(declared, claimed)):
            raise VaezooError(f"'{path}': metadata output_shape {tuple(claimed)} disagrees with the graph's "
                              f"output x {x.shape}")
    try:
        probe = session.run(["x"], {"z": np.zeros((2, latent_dim), dtype=np.float32)})[0]
    except Exception as exc:  # onnxruntime's pybind exception types
        raise VaezooError(f"'{path}' cannot decode a batch of 2: {str(exc).splitlines()[0]}") from None
    shape = tuple(int(d) for d in probe.shape[1:])
    if probe.shape[0] != 2 or probe.dtype != np.float32 or (claimed is not None and shape != tuple(claimed)) \
            or any(_fixed(g) and g != d for g, d in zip(declared, shape)) or len(shape) != len(declared):
        raise VaezooError(f"'{path}': for a batch of 2 the graph returned x {probe.dtype} {probe.shape}; it declares "
                          f"{x.shape}" + (f" and its metadata output_shape {tuple(claimed)}" if claimed is not None else ""))
    return latent_dim, shape
