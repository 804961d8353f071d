"""Deploying a trained detector: export to SavedModel, TFLite or ONNX, and run exports.

* :mod:`detkit.export.graph` - the inference graph in ``keras.ops``: uint8 letterboxed
  images in, raw outputs or final detections out (the model that is exported, and the
  compiled Keras inference path of ``predict``).
* :mod:`detkit.export.exporters` - writing one format (Keras ``model.export``, the TF Lite
  converter); :mod:`detkit.export.quantize` - float16 and int8 TF Lite settings and the
  representative dataset.
* :mod:`detkit.export.runtimes` - running an exported file (TensorFlow, LiteRT / TF Lite
  interpreter, onnxruntime); :mod:`detkit.export.detectors` - what ``predict`` runs:
  a Keras model (compiled or eager) or an export, behind one call.
* :mod:`detkit.export.settings` - the export's manifest block (model, anchors, classes,
  input size, quantization, NMS), written by ``export`` and read by ``predict``.
* :mod:`detkit.export.deps` - the optional ``export`` extra and its one-line error.

Nothing here imports TensorFlow, onnxruntime or Keras at module level except
:mod:`~detkit.export.graph`, which commands import inside ``run``.
"""
