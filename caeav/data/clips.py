"""One clip's model inputs from either media form, through the decoded-tensor cache (torch-free).

`ClipLoader.load(record)` returns a `caeav.media.RawClip` (uint8 frames [T, S, S, 3], audio [T, 32000]):
* pre-extracted form: the layout's T frame files (bicubic-resized to S by `caeav.media.load_image`) and the
  waveform .npy cut into T one-second rows (zero-padded, and reported, when shorter than T seconds);
* video form: `caeav.media.decode_raw` with the task's sampling rule.
`media="auto"` prefers the pre-extracted form (what the authors' loaders read) and falls back to the video.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from caeav.errors import DataError
from caeav.media import RawClip, decode_raw, load_image, normalize_frames, segment_waveform
from caeav.media.types import SAMPLE_RATE

from .cache import DecodedCache, source_fingerprint
from .layout import TaskLayout

MEDIA_FORMS = ("auto", "frames", "video")


class ClipLoader:
    def __init__(self, layout: TaskLayout, size: int, media: str = "auto", cache_dir=None, strict: bool = False):
        if media not in MEDIA_FORMS:
            raise DataError(f"unknown media form {media!r}; choose one of {', '.join(MEDIA_FORMS)}")
        self.layout = layout
        self.size = int(size)
        self.media = media
        self.strict = strict
        self.cache = DecodedCache(cache_dir) if cache_dir is not None else None

    def form(self, record) -> Optional[str]:
        """Which media form this record can be loaded from ("frames" or "video"), or None if neither exists."""
        if self.media in ("auto", "frames") and self.layout.has_extracted(record):
            return "frames"
        if self.media in ("auto", "video") and self.layout.video_path(record) is not None:
            return "video"
        return None

    def missing_reason(self, record) -> Optional[str]:
        """None when the record is usable, else what is missing (for `caeav data check` and error messages)."""
        extra = self.layout.extra_missing(record)
        if extra is not None:
            return extra
        if self.form(record) is not None:
            return None
        key = self.layout.media_key(record)
        wanted = {"frames": "extracted frames + waveform", "video": "video", "auto": "video or extracted frames + waveform"}
        return f"{wanted[self.media]} for {key}"

    def load(self, record) -> RawClip:
        form = self.form(record)
        if form is None:
            raise DataError(f"{self.layout.root}: no {self.missing_reason(record)}")
        if form == "frames":
            sources = list(self.layout.frame_files(record)) + [self.layout.wave_path(record)]
        else:
            sources = [self.layout.video_path(record)]
        key = self.layout.media_key(record)
        params = {"form": form, "segments": self.layout.segments, "size": self.size, "sampling": self.layout.sampling,
                  "strict": self.strict}
        fingerprint = source_fingerprint(sources) if self.cache is not None else None
        if self.cache is not None:
            cached = self.cache.get(key, fingerprint, params)
            if cached is not None:
                return cached
        clip = self._load_frames(record) if form == "frames" else self._decode(sources[0])
        if self.cache is not None:
            self.cache.put(key, fingerprint, params, clip)
        return clip

    def load_inputs(self, record) -> tuple[np.ndarray, np.ndarray, RawClip]:
        """(frames float32 [T, 3, S, S] ImageNet-normalised, audio float32 [T, 32000], the RawClip)."""
        clip = self.load(record)
        return normalize_frames(np.asarray(clip.frames)), np.array(clip.audio, dtype=np.float32), clip

    def _decode(self, path) -> RawClip:
        return decode_raw(path, self.layout.segments, self.size, sampling=self.layout.sampling, strict=self.strict)

    def _load_frames(self, record) -> RawClip:
        files = self.layout.frame_files(record)
        frames = np.stack([load_image(p, self.size) for p in files])
        wave = self.layout.load_wave(record)
        audio, missing = segment_waveform(wave, self.layout.segments)
        notes = []
        if missing:
            notes.append(f"{self.layout.wave_path(record)}: {missing / SAMPLE_RATE:g} s short of "
                         f"{self.layout.segments} s; zero-padded")
        return RawClip(frames=frames, audio=audio, duration=wave.shape[0] / SAMPLE_RATE, has_audio=True,
                       padded_seconds=round(missing / SAMPLE_RATE, 3), warnings=notes)
