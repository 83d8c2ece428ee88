"""Annotation parsers for the four benchmarks: plain records (frozen dataclasses) and label arrays, numpy only.

The bundled copies live in `caeav/assets/annotations/{ave,llp,music-avqa}/` and are found with importlib.resources
(`default_annotation_root`); every loader also takes `root=` to read another copy. AVSBench meta CSVs are not bundled.
Missing or malformed files raise `caeav.errors.DataError` with one line naming the file (and line or entry).
"""

from ._io import default_annotation_root
from .ave import AVE_SPLITS, AVEAnnotations, AVERecord, ave_label_matrix, ave_segment_targets, load_ave, load_ave_categories
from .avsbench import AVS_SPLITS, AVS_SUBSETS, AVSRecord, load_avsbench_meta
from .llp import (
    LLP_CLASS_INDEX,
    LLP_CLASSES,
    LLPClip,
    LLPEvent,
    llp_ground_truth,
    load_llp_clips,
    load_llp_eval,
    load_llp_events,
    load_llp_weak_labels,
    unmatched_event_names,
)
from .musicavqa import (
    AVQA_MAX_QUESTION_LEN,
    AVQAQuestion,
    AVQAVocab,
    load_avqa_questions,
    load_avqa_vocab,
    parse_avqa_questions,
    question_tokens,
)

__all__ = [
    "AVE_SPLITS",
    "AVEAnnotations",
    "AVERecord",
    "AVQAQuestion",
    "AVQAVocab",
    "AVQA_MAX_QUESTION_LEN",
    "AVSRecord",
    "AVS_SPLITS",
    "AVS_SUBSETS",
    "LLPClip",
    "LLPEvent",
    "LLP_CLASSES",
    "LLP_CLASS_INDEX",
    "ave_label_matrix",
    "ave_segment_targets",
    "default_annotation_root",
    "llp_ground_truth",
    "load_ave",
    "load_ave_categories",
    "load_avqa_questions",
    "load_avqa_vocab",
    "load_avsbench_meta",
    "load_llp_clips",
    "load_llp_eval",
    "load_llp_events",
    "load_llp_weak_labels",
    "parse_avqa_questions",
    "question_tokens",
    "unmatched_event_names",
]
