"""An exported decoder as an MLflow model: the ``mlflow.onnx`` flavour with a signature and an input example
taken from running the graph in onnxruntime, and explicit pip requirements (what ``mlflow models serve``
installs or, with ``--env-manager local``, expects). Used by ``vaezoo publish`` and ``vaezoo export --register``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

EXAMPLE_ROWS = 4  # rows of the input example stored beside the model (small: it is shown in the UI)
SERVING_PACKAGES = ("onnx", "onnxruntime", "numpy")  # what the onnx flavour's pyfunc imports to serve


def pip_requirements() -> list[str]:
    """The serving packages pinned to the versions the model was checked with here."""
    return [f"{p}=={metadata.version(p)}" for p in SERVING_PACKAGES]


def example_input(path: str | Path, rows: int = EXAMPLE_ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded input for the graph: standard-normal z for a decoder, the count n for a sampler graph."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        if inp.type == "tensor(int64)":
            feeds[inp.name] = np.array(rows, dtype=np.int64)
        else:
            dims = [rows if not isinstance(d, int) else d for d in inp.shape]
            feeds[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def save_onnx_model(path: str | Path, dst: str | Path) -> dict:
    """Write ``path`` as an MLflow ONNX model folder ``dst`` (one self-contained .onnx file, signature, input
    example, pip requirements); returns {signature, input_example} as stored."""
    import mlflow.onnx
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    feeds = example_input(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    single = lambda d: next(iter(d.values())) if len(d) == 1 else d  # noqa: E731  (one tensor: no dict)
    signature = infer_signature(single(feeds), single(outputs))
    # one self-contained file, so the registry holds the very bytes (and sha256) that were exported
    mlflow.onnx.save_model(onnx.load(str(path)), str(dst), signature=signature, input_example=single(feeds),
                           pip_requirements=pip_requirements(), save_as_external_data=False)
    return {"signature": signature.to_dict(), "input_names": list(feeds), "output_names": list(outputs)}
