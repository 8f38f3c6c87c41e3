"""Prediction and evaluation over an image archive on a Ray cluster (``edgevision predict / eval --ray``).

* `predict_on_ray`: what ``edgevision predict MODEL SOURCE --out DIR --ray [ADDRESS]`` runs. The driver streams
  SOURCE's listing into shard list files (never the whole listing in memory), a pool of Ray actors (each one
  holding one onnxruntime session) decodes and predicts each shard on the node it runs on and writes the shard's
  JSON Lines atomically, and the driver merges the shards into the same ``predictions.json`` / CSV the local
  command writes (`edgevision.outputs`), byte for byte.
* `predict_records_on_ray`: the predictions ``edgevision eval MODEL --data D --ray`` scores, equal to the local
  ones.
* `cluster`: connecting (``auto``, ``ray://``, a head address) or starting a loopback-only cluster for the call.

Ray is the ``scale`` extra; nothing here imports it before a cluster run starts.
"""

from edgevision.scale.run import RayOptions, predict_on_ray, predict_records_on_ray

__all__ = ["RayOptions", "predict_on_ray", "predict_records_on_ray"]
