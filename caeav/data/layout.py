"""Where each task's annotations and media live under a dataset root (torch-free).

Media come in two forms; a dataset uses whichever an item has (pre-extracted first):
* raw videos (any container PyAV reads: .mp4, .mkv, .webm, .avi, .mov), decoded by `caeav.media`;
* pre-extracted frames + 32 kHz mono waveforms in the community layout (metrics-and-data.md §1).

    AVE (ave)            Annotations.txt, categories.txt, {train,val,test}Set.txt   (else the bundled copy)
                         videos/<VideoID>.mp4
                         frames/<VideoID>/00000001.jpg ...  (every frame; T picked with int(linspace(1, N, T)))
                         wave/<VideoID>.npy                 (T x 32000 float32 samples)
    LLP (avvp)           AVVP_{train,val_pd,test_pd,eval_audio,eval_visual}.csv    (else the bundled copy)
                         videos/<filename>.mp4              (filename = <YouTube id>_<start>_<end>)
                         frames/<id>/00000001.jpg ... 00000010.jpg   (1 frame/s; id = filename[:11])
                         wave/<id>.npy
                         feats/r2plus1d_18/<id>.npy         (optional: the LLP release's R(2+1)D-18 features,
                                                             float [10, 512]; else computed from the video)
    MUSIC-AVQA (avqa)    avqa-{train,val,test}.json, ans_vocab.txt, ques_vocab.txt (else bundled: val, test)
                         videos/<video_id>.mp4, frames/<video_id>/%08d.jpg, audio_wave/<video_id>.npy
    AVSBench S4 (avs_s4) s4_meta_data.csv (required), s4_data/
                         raw_videos/<split>/<category>/<name>.mp4
                         visual_frames/<split>/<category>/<name>/<name>_<1..5>.png
                         gt_masks/<split>/<category>/<name>/<name>_<k>.png   (train: k = 1 only)
                         wave/<split>/<category>/AVS.npy    (pickled dict "<name>.wav" -> 160000 samples)
    AVSBench MS3         ms3_meta_data.csv (required), ms3_data/
      (avs_ms3)          raw_videos/<name>.mp4, visual_frames/<name>/<name>.mp4_<1..5>.png,
                         gt_masks/<split>/<name>/<name>_<1..5>.png, wave/<split>/AVS.npy
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from caeav.errors import DataError
from caeav.media.sampling import TASK_SAMPLING, TASK_SEGMENTS, linspace_indices

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "val", "test")


@lru_cache(maxsize=256)
def _listing(folder: str, extensions: tuple) -> dict:
    """stem -> path of the files in `folder` with one of `extensions` (read once per folder and process)."""
    out = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in extensions and entry.is_file():
                    out.setdefault(stem, Path(entry.path))
    except (FileNotFoundError, NotADirectoryError):
        pass
    return out


def forget_listings() -> None:
    """Drop the cached folder listings (after files were added or removed in this process)."""
    _listing.cache_clear()
    _avs_wave_dict.cache_clear()


def find_video(folder: Path, *stems: str) -> Optional[Path]:
    listing = _listing(str(folder), VIDEO_EXTENSIONS)
    for stem in stems:
        if stem in listing:
            return listing[stem]
    return None


def _all_frames(folder: Path) -> list[Path]:
    return sorted(_listing(str(folder), IMAGE_EXTENSIONS).values(), key=lambda p: p.name)


@lru_cache(maxsize=64)
def _avs_wave_dict(path: str):
    try:
        data = np.load(path, allow_pickle=True)  # the AVSBench community format is a pickled dict
        return data.item() if data.dtype == object else None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable AVS waveform dictionary ({exc})") from None


class TaskLayout:
    """Paths of one task's media under `root`; subclasses know the task's annotation records."""

    task = ""
    media_hint = ""  # where the media of an item are looked for, for messages

    def __init__(self, root, annotations=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        self.annotations = Path(annotations) if annotations is not None else None
        self.segments = TASK_SEGMENTS[self.task]
        self.sampling = TASK_SAMPLING[self.task]

    def annotation_root(self, marker: str) -> Optional[Path]:
        """The folder holding the annotation files: `annotations`, else `root` if it has `marker`, else None (bundled)."""
        if self.annotations is not None:
            return self.annotations
        return self.root if (self.root / marker).is_file() else None

    # --- per record -------------------------------------------------------------------------------------------
    def records(self, split: str) -> list:
        raise NotImplementedError

    def media_key(self, record) -> str:
        """The id the media are keyed by (several records may share a video)."""
        raise NotImplementedError

    def video_path(self, record) -> Optional[Path]:
        raise NotImplementedError

    def frame_files(self, record) -> Optional[list[Path]]:
        """The T pre-extracted frame files of the record, in order, or None if any is missing."""
        raise NotImplementedError

    def wave_path(self, record) -> Path:
        raise NotImplementedError

    def load_wave(self, record) -> np.ndarray:
        """The pre-extracted mono 32 kHz waveform (1-D float32)."""
        path = self.wave_path(record)
        try:
            return np.asarray(np.load(path), dtype=np.float32).reshape(-1)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable waveform .npy ({exc})") from None

    def has_wave(self, record) -> bool:
        return self.wave_path(record).is_file()

    def has_extracted(self, record) -> bool:
        return self.has_wave(record) and self.frame_files(record) is not None

    def extra_missing(self, record) -> Optional[str]:
        """Annotation media an item cannot do without whatever the media form (AVS masks), or None."""
        return None


class _LinspaceFrames:
    """AVE and MUSIC-AVQA: every frame is extracted; T are picked with int(linspace(1, N, T))."""

    frames_dir_name = "frames"

    def frame_files(self, record) -> Optional[list[Path]]:
        files = _all_frames(self.root / self.frames_dir_name / self.media_key(record))
        if not files:
            return None
        return [files[i] for i in linspace_indices(len(files), self.segments)]


class AVELayout(_LinspaceFrames, TaskLayout):
    task = "ave"
    media_hint = "videos/<VideoID>.mp4, or frames/<VideoID>/*.jpg + wave/<VideoID>.npy"

    def records(self, split: str) -> list:
        from .annotations import load_ave

        return load_ave(self.annotation_root("Annotations.txt")).split(split)

    def media_key(self, record) -> str:
        return record.video_id

    def video_path(self, record) -> Optional[Path]:
        return find_video(self.root / "videos", record.video_id)

    def wave_path(self, record) -> Path:
        return self.root / "wave" / f"{record.video_id}.npy"


class LLPLayout(TaskLayout):
    task = "avvp"
    media_hint = "videos/<filename>.mp4, or frames/<id>/00000001..10.jpg + wave/<id>.npy"

    def records(self, split: str) -> list:
        from .annotations import load_llp_clips

        return load_llp_clips(split, self.annotation_root("AVVP_train.csv"))

    def media_key(self, record) -> str:
        return record.video_id

    def video_path(self, record) -> Optional[Path]:
        return find_video(self.root / "videos", record.filename, record.video_id)

    def frame_files(self, record) -> Optional[list[Path]]:
        listing = _listing(str(self.root / "frames" / record.video_id), IMAGE_EXTENSIONS)
        names = [f"{k:08d}" for k in range(1, self.segments + 1)]
        return [listing[n] for n in names] if all(n in listing for n in names) else None

    def wave_path(self, record) -> Path:
        return self.root / "wave" / f"{record.video_id}.npy"

    def st_feature_path(self, record) -> Path:
        """Where the LLP release keeps a clip's R(2+1)D-18 features (`--st_dir feats/r2plus1d_18/`)."""
        return self.root / "feats" / "r2plus1d_18" / f"{record.video_id}.npy"


class AVQALayout(_LinspaceFrames, TaskLayout):
    task = "avqa"
    media_hint = "videos/<video_id>.mp4, or frames/<video_id>/*.jpg + audio_wave/<video_id>.npy"

    def records(self, split: str) -> list:
        from .annotations import load_avqa_questions

        return load_avqa_questions(split, self.annotation_root(f"avqa-{split}.json"))

    def media_key(self, record) -> str:
        return record.video_id

    def video_path(self, record) -> Optional[Path]:
        return find_video(self.root / "videos", record.video_id)

    def wave_path(self, record) -> Path:
        return self.root / "audio_wave" / f"{record.video_id}.npy"


class AVSLayout(TaskLayout):
    """AVSBench S4 / MS3: 5 frames, masks as annotation media, waveforms in per-split pickled dictionaries."""

    subset = "s4"

    @property
    def data(self) -> Path:
        return self.root / f"{self.subset}_data"

    def meta_csv(self) -> Path:
        base = self.annotations if self.annotations is not None else self.root
        return base / f"{self.subset}_meta_data.csv"

    def records(self, split: str) -> list:
        from .annotations import load_avsbench_meta

        path = self.meta_csv()
        if not path.is_file():
            raise DataError(f"AVSBench meta file not found: {path} (AVSBench annotations are not bundled)")
        return load_avsbench_meta(path, self.subset, split)

    def media_key(self, record) -> str:
        return record.name

    def video_path(self, record) -> Optional[Path]:
        folder = self.data / "raw_videos"
        if self.subset == "s4":
            folder = folder / record.split / record.category
        return find_video(folder, record.name)

    def frame_files(self, record) -> Optional[list[Path]]:
        paths = [self.data / p for p in record.frame_paths()]
        return paths if all(p.is_file() for p in paths) else None

    def wave_path(self, record) -> Path:
        parts = (record.split, record.category) if self.subset == "s4" else (record.split,)
        return self.data.joinpath("wave", *parts, "AVS.npy")

    def load_wave(self, record) -> np.ndarray:
        table = _avs_wave_dict(str(self.wave_path(record)))
        key = f"{record.name}.wav"
        if table is None or key not in table:
            raise DataError(f"{self.wave_path(record)}: no waveform for {key}")
        return np.asarray(table[key], dtype=np.float32).reshape(-1)

    def has_wave(self, record) -> bool:
        path = self.wave_path(record)
        return path.is_file() and f"{record.name}.wav" in (_avs_wave_dict(str(path)) or {})

    def mask_files(self, record) -> list[Path]:
        return [self.data / p for p in record.mask_paths()]

    def extra_missing(self, record) -> Optional[str]:
        missing = [p for p in self.mask_files(record) if not p.is_file()]
        return f"mask {missing[0]}" if missing else None


class AVSMS3Layout(AVSLayout):
    task = "avs_ms3"
    subset = "ms3"
    media_hint = ("ms3_data/raw_videos/<name>.mp4, or ms3_data/visual_frames/<name>/ + ms3_data/wave/<split>/AVS.npy; "
                  "masks in ms3_data/gt_masks/<split>/<name>/")


class AVSS4Layout(AVSLayout):
    task = "avs_s4"
    subset = "s4"
    media_hint = ("s4_data/raw_videos/<split>/<category>/<name>.mp4, or s4_data/visual_frames/<split>/<category>/<name>/"
                  " + s4_data/wave/<split>/<category>/AVS.npy; masks in s4_data/gt_masks/")


LAYOUTS = {"ave": AVELayout, "avvp": LLPLayout, "avqa": AVQALayout, "avs_s4": AVSS4Layout, "avs_ms3": AVSMS3Layout}


def canonical(task: str) -> str:
    """A task name or alias (avs, s4, ms3, llp) as one of ave, avvp, avqa, avs_s4, avs_ms3; DataError otherwise."""
    from caeav.config import ConfigError, canonical_task

    try:
        return canonical_task({"llp": "avvp", "music-avqa": "avqa"}.get(task, task))
    except ConfigError as exc:
        raise DataError(str(exc)) from None


def layout_for(task: str, root, annotations=None) -> TaskLayout:
    """The layout of `task` (aliases accepted) under the dataset folder `root`."""
    return LAYOUTS[canonical(task)](root, annotations)
