"""The sampler graph: input a count ``n`` (int64 scalar), outputs ``x`` [n, *shape] and the ``z`` it drew.

For callers that cannot make Gaussian noise. z comes from ONNX RandomNormalLike with a seed fixed at
export: a new session replays the same stream of draws (the first call of every fresh session gives the
same images); each further call in a session continues that stream. Callers that need per-request seeds
should use the plain decoder graph with their own z (``vaezoo.runtime.Decoder.sample(n, seed=...)``).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from exporters.graph import INPUT
from vaezoo.core.errors import VaezooError


def wrap_sampler(proto: onnx.ModelProto, latent_dim: int, seed: int) -> onnx.ModelProto:
    """A copy of the decoder graph whose ``z`` is drawn inside from N(0, I) for a given count ``n``."""
    if [i.name for i in proto.graph.input] != [INPUT]:
        raise VaezooError("the sampler wraps a decoder graph with the single input 'z'")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, []))
    g.initializer.extend([
        helper.make_tensor("sampler_axes0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("sampler_latent_dim", TensorProto.INT64, [1], [latent_dim]),
    ])
    front = [
        helper.make_node("Unsqueeze", ["n", "sampler_axes0"], ["sampler_n1"], name="sampler_n1"),
        helper.make_node("Concat", ["sampler_n1", "sampler_latent_dim"], ["sampler_shape"], axis=0, name="sampler_shape"),
        helper.make_node("ConstantOfShape", ["sampler_shape"], ["sampler_zeros"], name="sampler_zeros",
                         value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("RandomNormalLike", ["sampler_zeros"], [INPUT], name="sampler_z",
                         dtype=TensorProto.FLOAT, mean=0.0, scale=1.0, seed=float(seed)),
    ]
    nodes = front + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["n", latent_dim]))
    return out
