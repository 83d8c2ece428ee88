"""`caeav infer --json OUT`: the JSON document, schema ``caeav.infer/2``, and the JSON Lines file written as it goes.

    {
      "schema": "caeav.infer/2",
      "caeav_version": "0.1.0",
      "interrupted": bool,                         # true: stopped by SIGINT/SIGTERM; "videos" holds those finished
      "bundle": {"path": str, "task": "ave" | "avvp" | "avs_s4" | "avs_ms3" | "avqa", "segments": T,
                 "image_size": S},
      "engine": {"name": "ort" | "trt" | "torch", "precision": "fp32" | "fp16" | "int8" | "int8cpu" | "bf16",
                 "detail": str},
      "videos": [
        {
          "path": str,
          "duration": float,                       # seconds of content: the container's, or what a truncated
                                                   # file really decodes (a warning then says so)
          "seconds": N,                            # timeline length (caeav.runtime.windows)
          "windows": [{"start": int, "end": int}], # the model windows that covered it (seconds)
          "captions": {"source": "cache" | "endpoint" | "none" | "unused",  # endpoint: --caption-endpoint; unused: AVMoE
                       "sources": {"visual": "cache" | "endpoint" | "none", "audio": ...},  # none: empty caption
                       "clip_id": str | null, "missing": ["visual" | "audio", ...]},   # caeav.runtime.captions
          "warnings": [str],                       # decoding notes (padding, truncation, damaged packets, missing
                                                   # captions), the task's notes (files written, questions)
          # task "ave":
          "per_second": [{"second": t, "label": str, "index": 0..28 (28 = background), "confidence": float,
                          "event_prob": float, "class_prob": float}],              # N entries
          "events": [{"label": str, "index": int, "onset": int, "offset": int,     # seconds, offset exclusive
                      "background": bool, "confidence": float}],                  # runs of one label, in order
          # task "avvp":
          "per_second": [{"second": t, "audio": [str], "visual": [str], "audio_visual": [str]}],
          "events": {"audio" | "visual" | "audio_visual":
                         [{"label": str, "index": 0..24, "onset": int, "offset": int, "confidence": float}]},
          "video_labels": [str],                   # classes predicted present anywhere in the video
          # tasks "avs_s4", "avs_ms3" (caeav.runtime.tasks.avs):
          "resolution": [width, height],           # of the upright video: masks, areas and boxes are in it
          "frames": [{"time": float,               # seconds: the sampled frame's timestamp (one per second)
                      "mask": str | null,          # its PNG's file name in --masks DIR (null without --masks)
                      "area": float,               # fraction of the frame's pixels in the mask, 0..1
                      "bbox": [x0, y0, x1, y1] | null}],   # pixels, inclusive; null for an empty mask
          "overlay": str | null,                   # the --overlay video written for this clip
          # task "avqa" (caeav.runtime.tasks.avqa):
          "answers": [{"question": str, "answer": str | null, "index": int | null, "confidence": float | null,
                       "top": [[str, float], ...], "tokens": [str], "warnings": [str]}]
        }
      ],
      "failures": [{"path": str, "error": str}],   # files that could not be processed (the exit code is then 1)
      "notes": [str],
      "timings": {"total_s": float, "inference_s": float}
    }

Labels and confidences follow `caeav.runtime.events`; class names come from the bundle's postprocess.json. Each task's
fields come from its adapter (`TaskAdapter.to_json`). Schema 1 -> 2: `interrupted`, AVS and AVQA fields; a truncated
file's `duration` is what decodes. Within schema 2 (additive): `captions.sources` and the `endpoint` source.

Written as it goes: with `--json OUT.json` every finished video (or failure) is also appended, one JSON object per
line, to `OUT.partial.jsonl` beside it (`PartialLog`: a header line {"schema": "caeav.infer-partial/1", "bundle",
"engine"}, then {"video": {...}} or {"failure": {...}} lines, each flushed to disk). When OUT.json has been written
(also after an interrupt) the partial file is removed; if the run dies first (a crash, kill -9, a disk that fills up
at the end) it is kept, and holds every video finished until then.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from caeav.errors import CaeavError
from caeav.files import write_json_atomic

SCHEMA = "caeav.infer/2"
PARTIAL_SCHEMA = "caeav.infer-partial/1"


def video_json(result, adapter) -> dict:
    out = {"path": result.path, "duration": result.duration, "seconds": result.seconds, "windows": result.windows,
           "captions": result.captions, "warnings": result.warnings}
    out.update(adapter.to_json(result))
    return out


def _header(report) -> dict:
    from caeav import __version__

    b = report.bundle
    return {"caeav_version": __version__,
            "bundle": {"path": str(b.path), "task": b.task, "segments": b.segments, "image_size": b.image_size},
            "engine": {"name": report.engine, "precision": report.precision, "detail": report.engine_detail}}


def report_json(report) -> dict:
    adapter = report.bundle.adapter
    return {
        "schema": SCHEMA,
        "interrupted": bool(report.interrupted),
        **_header(report),
        "videos": [video_json(r, adapter) for r in report.results],
        "failures": [{"path": f.path, "error": f.error} for f in report.failures],
        "notes": report.notes,
        "timings": report.timings,
    }


def write_json(report, path: Union[str, os.PathLike]) -> Path:
    """Write the document atomically (temp file + rename); a failure is one line that names the partial file."""
    try:
        return write_json_atomic(path, report_json(report))
    except OSError as exc:
        raise CaeavError(f"--json {path}: cannot be written ({exc.strerror or exc}); the results so far are in "
                         f"{partial_path(path)}") from None


def partial_path(path: Union[str, os.PathLike]) -> Path:
    """OUT.json -> OUT.partial.jsonl (beside it)."""
    p = Path(path)
    return p.with_name(p.stem + ".partial.jsonl")


class PartialLog:
    """The JSON Lines file written as videos finish (module docstring). `add` is the pipeline's `on_result`."""

    def __init__(self, json_path: Union[str, os.PathLike], report):
        self.path = partial_path(json_path)
        self.adapter = report.bundle.adapter
        try:
            self._fh: Optional[object] = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise CaeavError(f"--json: cannot write {self.path} ({exc.strerror or exc})") from None
        self._line({"schema": PARTIAL_SCHEMA, **_header(report)})

    def _line(self, obj: dict) -> None:
        try:
            self._fh.write(json.dumps(obj) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise CaeavError(f"--json: cannot append to {self.path} ({exc.strerror or exc})") from None

    def add(self, item) -> None:
        if hasattr(item, "timeline"):
            self._line({"video": video_json(item, self.adapter)})
        else:
            self._line({"failure": {"path": item.path, "error": item.error}})

    def close(self, remove: bool) -> None:
        """Close the file; remove it once the final JSON holds everything."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if remove:
            self.path.unlink(missing_ok=True)


def read_partial(path: Union[str, os.PathLike]) -> tuple[dict, list, list]:
    """(header, videos, failures) of a partial file (tests, and a user picking up after a crash)."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    header = lines[0] if lines else {}
    return (header, [x["video"] for x in lines[1:] if "video" in x],
            [x["failure"] for x in lines[1:] if "failure" in x])
