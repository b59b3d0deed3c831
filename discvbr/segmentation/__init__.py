"""Lumbar disc segmentation: the CFCM network, training, ensemble inference, levels.

``segment_discs(image)`` is the entry point: it segments the five lumbar discs of a
sagittal image (or the first echo of a series) with the shipped default model (or any
model or ensemble folder), and returns labels (1 = L5S1 ... 5 = L1L2), class
probabilities, an uncertainty map, a per-disc uncertainty score and warnings.
``train_network`` / ``discvbr train`` reproduce the models. Modules:

``network``      CFCM (and a U-Net baseline), width multiplier for compact variants
``preprocess``   resampling to the network grid and back, CLAHE + z-score
``augment``      rotation, elastic deformation, localised Gaussian brightening (+ extras)
``dataset``      training tables, slices, cross-validation folds split by subject group
``train``        Dice loss, Adam, checkpoints, resume, validation
``infer``        batched inference, ensembles (averaged logits), device choice
``postprocess``  threshold, connected components, levels along the spine, uncertainty
``model_store``  model folders (safetensors + JSON metadata), the shipped default
``segment``      the API above and writing its outputs

Importing this package imports torch; the ``discvbr`` command line imports it only when
a segmentation command runs.
"""

from discvbr.segmentation.model_store import DEFAULT_MODEL, default_model_path, load_model
from discvbr.segmentation.postprocess import DEFAULT_MIN_SIZE, DEFAULT_THRESHOLD, LevelAssignment, postprocess
from discvbr.segmentation.segment import SegmentationResult, load_models, prepare_input, segment_discs, write_result

__all__ = [
    "DEFAULT_MIN_SIZE",
    "DEFAULT_MODEL",
    "DEFAULT_THRESHOLD",
    "LevelAssignment",
    "SegmentationResult",
    "default_model_path",
    "load_model",
    "load_models",
    "postprocess",
    "prepare_input",
    "segment_discs",
    "write_result",
]
