"""One clip's model inputs from either media form, through the decoded-tensor cache (torch-free).

`ClipLoader.load(record)` returns a `caeav.media.RawClip` (uint8 frames [T, S, S, 3], audio [T, 32000]):
* pre-extracted form: the layout's T frame files (bicubic-resized to S by `caeav.media.load_image`) and the
  waveform .npy cut into T one-second rows (zero-padded, and reported, when shorter than T seconds);
* video form: `caeav.media.decode_raw` with the task's sampling rule.
`media="auto"` prefers the pre-extracted form (what the authors' loaders read) and falls back to the video.

`STFeatures.load(record)` returns AVVP's R(2+1)D-18 clip features float32 [T, D]: the LLP release's
`feats/r2plus1d_18/<id>.npy` when the dataset has them, else computed once from the video (the stream's frames by
`caeav.media.st_frames`, the frozen stream behind an `encoder` hook) and kept in the same cache.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from caeav.errors import DataError
from caeav.media import RawClip, decode_raw, load_image, normalize_frames, segment_waveform
from caeav.media.st_frames import STSampling, decode_st_frames, st_clip_input
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


class STFeatures:
    """R(2+1)D-18 features `[T, dim]` float32 of LLP records (module docstring). `encoder`: clips float32
    [T, 3, F, S, S] → [T, dim] with an `identity` dict (`caeav.model.st_stream.STFeatureEncoder`); None = only the
    precomputed files are usable. `cache`: a `DecodedCache` for the computed ones."""

    def __init__(self, layout, dim: int, sampling: STSampling, encoder: Optional[Callable] = None,
                 cache: Optional[DecodedCache] = None):
        self.layout, self.dim, self.sampling = layout, int(dim), sampling
        self.encoder, self.cache = encoder, cache

    def form(self, record) -> Optional[str]:
        """"npy" (precomputed), "video" (computed from the video) or None."""
        if self.layout.st_feature_path(record).is_file():
            return "npy"
        if self.encoder is not None and self.layout.video_path(record) is not None:
            return "video"
        return None

    def missing_reason(self, record) -> Optional[str]:
        if self.form(record) is not None:
            return None
        need = "" if self.encoder is None else f" or {self.layout.media_key(record)}'s video"
        return f"R(2+1)D features {self.layout.st_feature_path(record)}{need}"

    def load(self, record) -> np.ndarray:
        form = self.form(record)
        if form is None:
            raise DataError(f"{self.layout.root}: no {self.missing_reason(record)}")
        if form == "npy":
            return self.read(self.layout.st_feature_path(record))
        video = self.layout.video_path(record)
        if self.cache is None:
            return self.compute(video)
        key, sources = self.layout.media_key(record), source_fingerprint([video])
        params = {"segments": self.layout.segments, "sampling": self.sampling.to_dict(),
                  "encoder": self.encoder.identity}
        cached = self.cache.get_array(key, sources, params, "st")
        if cached is not None and tuple(cached.shape) == (self.layout.segments, self.dim):
            return np.asarray(cached, dtype=np.float32)
        features = self.compute(video)
        self.cache.put_array(key, sources, params, "st", features)
        return features

    def read(self, path) -> np.ndarray:
        """A precomputed feature file as float32 [T, dim]; DataError naming it when unreadable or of another shape."""
        try:
            array = np.load(path)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable R(2+1)D feature .npy ({exc})") from None
        want = (self.layout.segments, self.dim)
        if array.shape != want or not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{path}: R(2+1)D features are {array.dtype} {list(array.shape)}, expected float "
                            f"{list(want)} (LLP's feats/r2plus1d_18 layout; the config's task.head.st_dim)")
        return np.ascontiguousarray(array, dtype=np.float32)

    def compute(self, video) -> np.ndarray:
        """The stream applied to the video's stream frames: float32 [T, dim]."""
        segments = self.layout.segments
        clips = st_clip_input(decode_st_frames(video, segments, self.sampling), segments, self.sampling)
        features = np.asarray(self.encoder(clips), dtype=np.float32)
        if features.shape != (segments, self.dim):
            raise DataError(f"the R(2+1)D stream gives {list(features.shape)} features for {video}, the head expects "
                            f"[{segments}, {self.dim}] (st.channels[-1] and task.head.st_dim differ)")
        return features
