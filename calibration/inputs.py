"""Calibration inputs for INT8 post-training quantisation: clips decoded from a dataset root or a folder of videos,
stacked into arrays keyed by the encoder graph's input names and cached on disk as one `.npz`.

    from caeav.calibration import build_calib_inputs
    feeds = build_calib_inputs("clips/", task="ave", segments=10, size=192, max_clips=32, cache_dir="calib-cache")
    feeds["frames"]  # float32 [N, T, 3, S, S], ImageNet-normalised (decisions D6)
    feeds["wave"]    # float32 [N, T, 32000]
    feeds["st_clips"]  # with st=STSampling(...): AVVP's R(2+1)D-18 clips float32 [N, T, 3, F, S', S'] (same decode)

The cache file is named by a hash of the clip list (paths with size and mtime, or dataset clip ids) and every
preprocessing setting, so a rebuild with the same clips and settings reads the `.npz` instead of decoding again; any
change (a clip added or touched, another size or sampling) gives another key. Writes are atomic (temp file + rename).
Torch-free: decoding goes through `caeav.media` / `caeav.data`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from caeav.errors import CaeavError, ExportError
from caeav.files import atomic_file

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
INPUT_NAMES = ("frames", "wave")   # encoder.onnx inputs (bundle contract)
CACHE_VERSION = 1


def list_videos(folder: Path) -> list[Path]:
    """Video files directly inside `folder` (sorted, so the clip order is stable)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _file_key(path: Path) -> list:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def cache_key(clips: Sequence, settings: Mapping) -> str:
    """Hash of the clip list and the preprocessing settings (stable across runs and machines)."""
    blob = json.dumps({"version": CACHE_VERSION, "clips": list(clips), "settings": dict(settings)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _subsample(items: list, max_clips: Optional[int]) -> list:
    """At most `max_clips` items spread evenly over the list (deterministic)."""
    if not max_clips or len(items) <= max_clips:
        return items
    picks = np.linspace(0, len(items) - 1, max_clips).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def _from_videos(videos: list[Path], segments: int, size: int, sampling: str, start: float, st=None):
    from caeav.media import decode_clip
    from caeav.media.st_frames import st_clip_input

    frames, waves, clips = [], [], []
    for path in videos:
        clip = decode_clip(path, segments=segments, size=size, start=start, sampling=sampling, st=st)
        frames.append(clip.frames)
        waves.append(clip.audio)
        if st is not None:
            clips.append(st_clip_input(clip.st_frames, segments, st))
    return frames, waves, clips


def _dataset_st_clips(dataset, indices: list[int], segments: int, st, start: float) -> list:
    """The stream's clips of dataset records, from their videos; [] when a record has none (pre-extracted media)."""
    from caeav.media.st_frames import decode_st_frames, st_clip_input

    videos = [dataset.layout.video_path(dataset.records[i]) for i in indices]
    if any(v is None for v in videos):
        return []
    return [st_clip_input(decode_st_frames(v, segments, st, start), segments, st) for v in videos]


def _dataset_items(dataset, indices: list[int]):
    frames, waves = [], []
    for i in indices:
        item = dataset[i]
        frames.append(item["frames"])
        waves.append(item["audio"])
    return frames, waves


def _atomic_savez(path: Path, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
    with atomic_file(path) as fh:
        np.savez(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def load_calib_npz(path) -> dict[str, np.ndarray]:
    """Arrays of a calibration `.npz` (graph input name -> array), without the metadata entry."""
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files if k != "__meta__"}


def build_calib_inputs(source, task: str = "ave", *, segments: Optional[int] = None, size: Optional[int] = None,
                       sampling: Optional[str] = None, split: str = "train", max_clips: Optional[int] = 32,
                       start: float = 0.0, cache_dir=None, input_names: Sequence[str] = INPUT_NAMES,
                       rebuild: bool = False, st=None) -> dict[str, np.ndarray]:
    """Decode calibration clips from `source` into `{input_names[0]: frames [N,T,3,S,S], input_names[1]: wave
    [N,T,32000]}` (float32), cached as `<cache_dir>/calib-<key>.npz` (default cache dir: `<source>/.caeav-calib`).

    `source` is a folder of videos (any file with a video extension directly inside it) or a dataset root of `task`
    (records of `split`, clips without usable media skipped). `segments`/`size`/`sampling` default to the task's
    (`caeav.media.TASK_SEGMENTS`, `caeav.data.datasets.DEFAULT_SIZE`, `caeav.media.sampling_for_task`); pass the
    model's `segments` and `visual.img_size`. `max_clips` clips at most, spread evenly over the list. `st` (a
    `caeav.media.st_frames.STSampling`) adds AVVP's stream clips as `st_clips`, from the videos (a dataset root whose
    records have no videos gives none: the export then calibrates the stream on sample inputs and says so).
    """
    from caeav.media import TASK_SEGMENTS, sampling_for_task

    root = Path(source)
    if not root.is_dir():
        raise ExportError(f"calibration source {root} is not a directory (give a folder of videos or a dataset root)")
    segments = int(segments or TASK_SEGMENTS.get(task, 10))
    sampling = sampling or sampling_for_task(task)
    videos = list_videos(root)
    dataset = None
    if videos:
        size = int(size or 192)
        chosen = _subsample(videos, max_clips)
        clips = [_file_key(p) for p in chosen]
    else:
        from caeav.data.datasets import DEFAULT_SIZE, build_dataset

        size = int(size or DEFAULT_SIZE.get(task, 192))
        try:
            dataset = build_dataset(task, root, split, size=size, skip_missing=True)
        except CaeavError as err:
            raise ExportError(f"calibration source {root} has no videos and is not a {task} dataset root: {err}") from err
        indices = _subsample(list(range(len(dataset))), max_clips)
        clips = [dataset.clip_id(dataset.records[i]) for i in indices]
    if not clips:
        raise ExportError(f"no calibration clips found in {root}")
    names = list(input_names)
    settings = {"task": task, "segments": segments, "size": size, "sampling": sampling, "start": start,
                "split": split if dataset is not None else None, "source": "dataset" if dataset is not None else
                "videos", "inputs": names, "st": st.to_dict() if st is not None else None}
    key = cache_key(clips, settings)
    cache = Path(cache_dir) if cache_dir is not None else root / ".caeav-calib"
    path = cache / f"calib-{key}.npz"
    if path.is_file() and not rebuild:
        return load_calib_npz(path)
    if dataset is None:
        frames, waves, clips_st = _from_videos(chosen, segments, size, sampling, start, st)
    else:
        frames, waves = _dataset_items(dataset, indices)
        clips_st = _dataset_st_clips(dataset, indices, segments, st, start) if st is not None else []
    arrays = {names[0]: np.stack(frames).astype(np.float32, copy=False),
              names[1]: np.stack(waves).astype(np.float32, copy=False)}
    if clips_st:
        arrays["st_clips"] = np.stack(clips_st).astype(np.float32, copy=False)
    cache.mkdir(parents=True, exist_ok=True)
    _atomic_savez(path, arrays, {"key": key, "clips": clips, "settings": settings})
    return arrays
