"""Datasets and predictions in FiftyOne, and curated labels back out (the ``inspect`` extra).

`load_into_fiftyone` puts ground truth (any format EdgeVision reads) and optional predictions into a
persistent, named FiftyOne dataset, runs FiftyOne's COCO-style ``evaluate_detections`` the way
EdgeVision's evaluator counts (``compute_mAP=True``, 100 detections per image and class, crowd and
difficult objects ignored) and tags each object ``tp`` / ``fp`` / ``fn`` at the model's operating
points. `export_from_fiftyone` writes a dataset, a saved view or a tag back out through EdgeVision's
writers. `edgevision.inspect.fo_env` starts FiftyOne offline, untracked, with its database in a folder
the user controls.

Importing this package does not import FiftyOne.
"""

from edgevision.inspect.fo_env import database_dir, import_fiftyone
from edgevision.inspect.samples import GT_FIELD, PRED_FIELD

__all__ = ["GT_FIELD", "PRED_FIELD", "database_dir", "import_fiftyone"]
