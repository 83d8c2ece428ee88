"""`caeav infer --json OUT`: the JSON document, schema ``caeav.infer/1``.

    {
      "schema": "caeav.infer/1",
      "caeav_version": "0.1.0",
      "bundle": {"path": str, "task": "ave" | "avvp", "segments": T, "image_size": S},
      "engine": {"name": "ort" | "trt" | "torch", "precision": "fp32" | "fp16" | "int8", "detail": str},
      "videos": [
        {
          "path": str,
          "duration": float,                       # seconds, from the container
          "seconds": N,                            # timeline length (caeav.runtime.windows)
          "windows": [{"start": int, "end": int}], # the model windows that covered it (seconds)
          "captions": {"source": "cache" | "none", "clip_id": str | null, "missing": ["visual" | "audio", ...]},
          "warnings": [str],                       # decoding notes (padding, damaged packets, missing captions)
          # task "ave":
          "per_second": [{"second": t, "label": str, "index": 0..28 (28 = background), "confidence": float,
                          "event_prob": float, "class_prob": float}],              # N entries
          "events": [{"label": str, "index": int, "onset": int, "offset": int,     # seconds, offset exclusive
                      "background": bool, "confidence": float}],                  # runs of one label, in order
          # task "avvp":
          "per_second": [{"second": t, "audio": [str], "visual": [str], "audio_visual": [str]}],
          "events": {"audio" | "visual" | "audio_visual":
                         [{"label": str, "index": 0..24, "onset": int, "offset": int, "confidence": float}]},
          "video_labels": [str]                    # classes predicted present anywhere in the video
        }
      ],
      "failures": [{"path": str, "error": str}],   # files that could not be processed (the exit code is then 1)
      "notes": [str],
      "timings": {"total_s": float, "inference_s": float}
    }

Labels and confidences follow `caeav.runtime.events`; class names come from the bundle's postprocess.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from caeav.files import write_json_atomic

SCHEMA = "caeav.infer/1"


def video_json(result) -> dict:
    out = {"path": result.path, "duration": result.duration, "seconds": result.seconds, "windows": result.windows,
           "captions": result.captions, "warnings": result.warnings}
    out.update({k: v for k, v in result.timeline.items() if k != "arrays"})
    return out


def report_json(report) -> dict:
    from caeav import __version__

    b = report.bundle
    return {
        "schema": SCHEMA,
        "caeav_version": __version__,
        "bundle": {"path": str(b.path), "task": b.task, "segments": b.segments, "image_size": b.image_size},
        "engine": {"name": report.engine, "precision": report.precision, "detail": report.engine_detail},
        "videos": [video_json(r) for r in report.results],
        "failures": [{"path": f.path, "error": f.error} for f in report.failures],
        "notes": report.notes,
        "timings": report.timings,
    }


def write_json(report, path: Union[str, os.PathLike]) -> Path:
    """Write the document atomically (temp file + rename)."""
    return write_json_atomic(path, report_json(report))
