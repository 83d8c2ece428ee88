"""Caption features for the videos `caeav infer` runs on (P §III-C: S_ori from cached MLLM captions).

`CaptionSource(bundle, cache)` with cache = a caption cache file (`caeav captions encode`), ``"none"`` or None (both
mean: the bundle's empty-caption features for every video). A video is looked up by clip id = its file stem, then by
the sha256 of its bytes. A video the cache does not know (or knows in one modality only) gets the empty-caption
features for the missing modality; that is reported in the video's result (`captions` field), never fatal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from caeav.errors import CaptionError

from .bundle import Bundle


class CaptionSource:
    def __init__(self, bundle: Bundle, cache: Optional[Union[str, os.PathLike]] = None):
        self.empty = bundle.empty_caption()
        self.reader = None
        if cache is not None and str(cache) != "none":
            from caeav.captions.reader import CaptionFeatureReader

            if not Path(cache).is_file():
                raise CaptionError(f"{cache}: no such caption cache (pass a file from `caeav captions encode`, "
                                   "or --captions none)")
            self.reader = CaptionFeatureReader(cache)
            probe = self.reader.lookup("__caeav_probe__").visual
            if probe.shape[-1] != self.empty.shape[-1]:
                raise CaptionError(f"{cache}: caption features have {probe.shape[-1]} dims, the bundle's model "
                                   f"expects {self.empty.shape[-1]} (encoded with another text encoder?)")

    def features(self, video: Union[str, os.PathLike]) -> tuple[np.ndarray, np.ndarray, dict]:
        """(visual [L, D], audio [L, D] float32, status) with status {"source", "clip_id", "missing": [modalities]}."""
        if self.reader is None:
            return self.empty, self.empty, {"source": "none", "clip_id": None, "missing": []}
        item = self.reader.lookup(Path(video).stem)
        if item.clip_id is None:
            from caeav.captions.cache import file_sha256

            item = self.reader.lookup(file_sha256(video))
        missing = [m for m, fb in zip(("visual", "audio"), item.fallback) if fb]
        status = {"source": "cache", "clip_id": item.clip_id, "missing": missing}
        return item.visual.astype(np.float32), item.audio.astype(np.float32), status
