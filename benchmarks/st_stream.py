"""What AVVP's R(2+1)D-18 stream costs next to the encoder: GFLOP and CPU ms per 10-s clip, measured side by side.

    python benchmarks/st_stream.py                      # paper AVVP, random weights, batch 1, 2 threads, 3 repeats
    python benchmarks/st_stream.py --config tiny --repeats 5

One process, one clip of random inputs, eval mode, no gradients. Three calls are timed round-robin (so load from
other jobs spreads over all three): `encoder` (front end, lock-step Swin-V2 / HTS-AT with CASTE and AVMoE), `stream`
(`st_stream.segments` on the clip's T segments of 8×112² frames) and `model` (the whole AVVP forward from frames,
waveform, captions and `st_clips`: encoder + stream + captions + CASE + head). One warm-up call each is not counted.
GFLOP come from `caeav.model.flops` (FlopCounterMode on the meta device, 1 multiply-add = 2 FLOPs); GFLOP/s = GFLOP /
median seconds. Prints one table; ratios are against the encoder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def clip_inputs(cfg, batch: int = 1) -> dict:
    """Random model inputs for one clip (the shapes of `caeav.model.summary._example_inputs`, on the CPU)."""
    from caeav.model.summary import _example_inputs

    gen = torch.Generator().manual_seed(0)
    return {name: (torch.randn(t.shape, generator=gen) * 0.1 if t.is_floating_point() else torch.zeros(t.shape,
                   dtype=t.dtype)) for name, t in _example_inputs(cfg, batch).items()}


def stage_gflop(cfg) -> dict:
    """GFLOP per clip of the three timed calls, from the meta-device count."""
    from caeav.model import flops

    report = flops.flops_report(cfg)
    rows = report["components"]
    encoder = sum(rows.get(r, 0) for r in (flops.FRONT, flops.SWIN, flops.HTSAT, flops.CASTE, flops.AVMOE))
    return {"encoder": encoder / 1e9, "stream": rows.get(flops.ST, 0) / 1e9, "model": report["total"] / 1e9}


def time_calls(calls: dict, repeats: int) -> dict:
    """Seconds of each call per repeat, round-robin, after one warm-up call each."""
    seconds: dict = {name: [] for name in calls}
    with torch.inference_mode():
        for fn in calls.values():
            fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="paper")
    parser.add_argument("--task", default="avvp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from caeav.config import load_config
    from caeav.model.cae_av import build_model

    cfg = load_config(args.config, args.task, [])
    gflop = stage_gflop(cfg)
    start = time.perf_counter()
    model = build_model(cfg, load_weights=False).eval()
    built = time.perf_counter() - start
    if model.st_stream is None:
        print(f"{args.config}/{args.task} has no R(2+1)D-18 stream (task.head.st_dim = 0)", file=sys.stderr)
        return 2
    x = clip_inputs(cfg)
    calls = {
        "encoder": lambda: model.encoder(x["frames"], x["wave"]),
        "stream": lambda: model.st_stream.segments(x["st_clips"]),
        "model": lambda: model(**x),
    }
    seconds = time_calls(calls, args.repeats)

    st = cfg.st
    print(f"{args.config}/{args.task}, random weights, batch 1 (T = {cfg.task.segments}; stream: {st.frames}×"
          f"{st.size}² per segment), eval, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.repeats} repeats after 1 warm-up, built in {built:.0f} s")
    print(f"{'part':8s} {'GFLOP':>8s} {'median ms':>10s} {'min ms':>9s} {'GFLOP/s':>8s} "
          f"{'ms / encoder':>12s} {'GFLOP / encoder':>15s}")
    base_ms = 1e3 * statistics.median(seconds["encoder"])
    for name, values in seconds.items():
        ms = 1e3 * statistics.median(values)
        print(f"{name:8s} {gflop[name]:8.1f} {ms:10.0f} {1e3 * min(values):9.0f} {gflop[name] / ms * 1e3:8.1f} "
              f"{ms / base_ms:11.2f}x {gflop[name] / gflop['encoder']:14.2f}x")
    print(f"stream per segment: {gflop['stream'] / cfg.task.segments:.2f} GFLOP, "
          f"{1e3 * statistics.median(seconds['stream']) / cfg.task.segments:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
