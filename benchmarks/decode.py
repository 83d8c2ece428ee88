"""Decode speed: a 10-s 720p H.264 clip with AAC audio -> model inputs (frames + 32 kHz audio), median of N runs.

    .venv/bin/python benchmarks/decode.py [--runs 7] [--size 192] [--segments 10] [--all-cores] [--keep DIR]

The clip is synthesised with PyAV (moving shapes over a panning, smooth random texture, so the encoder has
real work and uses B-frames; 30 fps, stereo 48 kHz AAC). The process is pinned to one CPU core unless --all-cores is given. Prints
the median seconds per clip for each sampling rule and the real-time factor (clip seconds / decode seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from caeav.media import decode_clip
from caeav.media.write import write_video


def synth_720p(path: Path, seconds: int = 10, fps: int = 30) -> None:
    rng = np.random.default_rng(0)
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w]
    # camera-like detail: smooth random texture that pans, plus two moving shapes
    coarse = Image.fromarray(rng.integers(0, 256, size=(100, 180, 3), dtype=np.uint8))
    texture = np.asarray(coarse.resize((w + 320, h + 160), Image.Resampling.BICUBIC))

    def frames():
        for i in range(seconds * fps):
            img = texture[i // 2: i // 2 + h, i: i + w].copy()
            cx, cy = int(w / 2 + 400 * np.sin(i / 20)), int(h / 2 + 200 * np.cos(i / 15))
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 120 ** 2] = (220, 40, 40)
            left = (i * 9) % (w - 200)
            img[cy // 2: cy // 2 + 150, left: left + 200] = (40, 200, 60)
            yield img

    t = np.arange(seconds * 48000) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
    audio = np.stack([tone, np.roll(tone, 100)]).astype(np.float32)
    write_video(path, frames(), fps=fps, audio=audio, sample_rate=48000, options={"preset": "veryfast"})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one CPU core")
    parser.add_argument("--keep", type=Path, default=None, help="write the clip here (and reuse it if present)")
    args = parser.parse_args(argv)

    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    with tempfile.TemporaryDirectory() as tmp:
        clip = (args.keep or Path(tmp)) / "bench_720p.mp4"
        if not clip.exists():
            clip.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            synth_720p(clip)
            print(f"synthesised {clip.name} ({clip.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        print(f"decode + preprocess to [{args.segments},3,{args.size},{args.size}] frames and "
              f"[{args.segments},32000] audio on {cores} core(s), median of {args.runs}:")
        for sampling in ("linspace", "centre"):
            decode_clip(clip, args.segments, args.size, sampling=sampling)  # warm-up
            wall, cpu = [], []
            for _ in range(args.runs):
                t0, c0 = time.perf_counter(), time.process_time()
                decode_clip(clip, args.segments, args.size, sampling=sampling)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            median = statistics.median(wall)
            print(f"  {sampling:9s} {median * 1000:7.1f} ms/clip (CPU {statistics.median(cpu) * 1000:7.1f} ms)   "
                  f"real-time factor {args.segments / median:6.1f}x")


if __name__ == "__main__":
    main()
