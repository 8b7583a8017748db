"""torch -> ONNX exporters for vaezoo decoders, each export verified before it is written: ``export`` (a run or a
model to one file), ``graph`` (the decoder graph and its metadata), ``precision`` (int8, fp16), ``sampler`` (a graph
that draws z itself), ``verify`` (checker and onnxruntime-vs-torch parity), ``pretrained`` (the shipped decoders).

Imports vaezoo's models; vaezoo's library never imports this package (only its CLI does). Kept light: importing
``exporters`` loads neither torch nor onnx, so the CLI can show ``OPSET`` in its help without them.
"""

OPSET = 18  # the one default opset: ExportOptions and `vaezoo export --opset` take it from here
