"""Official evaluation metrics of the four CAE-AV benchmarks, as pure numpy functions (torch-free).

Each module cites the definition it implements (metrics-and-data.md §2 and the authors' evaluation code):

| task | module | headline numbers |
|---|---|---|
| AVE | `ave` | segment accuracy (%) with background included |
| AVVP | `avvp` | segment- and event-level F (%): audio, visual, audio-visual, Type@AV, Event@AV |
| AVS | `avs` | mIoU and F-score (beta^2 = 0.3), fractions |
| AVQA | `avqa` | accuracy (%) per question type, per modality (pooled) and overall |
"""

from .ave import AVE_BACKGROUND, AVE_NUM_CLASSES, accuracy_from_logits, predict_segments, running_mean_f32, segment_accuracy
from .avqa import AVQA_QUESTION_TYPES, avqa_accuracy, type_key
from .avs import avs_scores, fscore_thresholds, frame_fcurves, frame_iou, video_fscore, video_miou
from .avvp import (
    AVVP_NUM_CLASSES,
    AVVP_NUM_SEGMENTS,
    ClipF,
    avvp_scores,
    binarize,
    event_counts,
    event_level,
    extract_events,
    mean_class_f,
    segment_level,
)

__all__ = [
    "AVE_BACKGROUND",
    "AVE_NUM_CLASSES",
    "AVQA_QUESTION_TYPES",
    "AVVP_NUM_CLASSES",
    "AVVP_NUM_SEGMENTS",
    "ClipF",
    "accuracy_from_logits",
    "avqa_accuracy",
    "avs_scores",
    "avvp_scores",
    "binarize",
    "event_counts",
    "event_level",
    "extract_events",
    "frame_fcurves",
    "frame_iou",
    "fscore_thresholds",
    "mean_class_f",
    "predict_segments",
    "running_mean_f32",
    "segment_accuracy",
    "segment_level",
    "type_key",
    "video_fscore",
    "video_miou",
]
