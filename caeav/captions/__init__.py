"""MLLM captions of each clip (P §III-C Eq. 14, App. A) and their cached CLIP text features.

    caeav captions generate --task ave --root DATA --endpoint http://localhost:8000/v1   # ask Qwen2.5-Omni (vLLM)
    caeav captions encode --cache DATA/captions/ave.sqlite --config paper caption.weights=ViT-L-14.pt
    caeav captions show VIDEO_ID --cache DATA/captions/ave.sqlite

Modules: `cache` (the SQLite caption cache), `reader` (features for training and the runtime), `jsonl`
(import/export), `prompts` (π_v, π_a and the request bodies), `client` (HTTP with retries), `sources` (a dataset's
clips), `generate` (the resumable run), `encode` (CLIP features; the only module that imports torch).
This package's import path is torch-free.
"""

from .cache import EMPTY_CLIP_ID, MODALITIES, Caption, CaptionCache, file_sha256, text_sha256
from .prompts import PROMPT_VERSION
from .reader import CaptionFeatureReader, ClipCaptionFeatures

__all__ = ["EMPTY_CLIP_ID", "MODALITIES", "PROMPT_VERSION", "Caption", "CaptionCache", "CaptionFeatureReader",
           "ClipCaptionFeatures", "file_sha256", "text_sha256"]
