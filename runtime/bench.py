"""`caeav bench` / benchmarks/bench.py: engines side by side on one bundle, in one process, on the same inputs.

    result = run_bench("bundle/", engines=["torch", "ort"], batches=[1, 2], precisions=["fp32", "fp16", "int8"])
    print_bench(result)

For every (engine, precision, batch): the model is loaded, run `warmup` times (not timed), then `repeats` times.
Latency per clip = time of one call / batch (p50, p95 over the repeats); clips/s = batch / median call time; peak
memory = the process's peak resident set while that configuration ran (VmHWM after returning freed heap with glibc's
malloc_trim and resetting it through /proc/self/clear_refs; on systems without it, the lifetime peak; `base_mem_mb`
in the JSON is the RSS when the row started, its model loaded: what earlier rows left in the process counts in both,
so compare engines' memory in fresh processes, benchmarks/ort_memory.py, when it matters); speed-up = PyTorch FP32 eager clips/s at the same
batch, measured in the same run, divided into this row's clips/s; parity = max |Δ| of the head outputs against that
PyTorch run and the share of the task's predictions that agree (`TaskAdapter.bench_labels`: AVE / AVVP per-second
labels, AVS mask pixels, AVQA answers; the head's extra inputs, such as AVQA's question, from
`TaskAdapter.bench_feeds`); GFLOP/s = the FLOPs per clip `caeav export` counted for the graphs one clip runs
(`Bundle.flops_per_clip`, the manifest's "flops") × clips/s, "?" (and `gflop_s: null` in the JSON, with
`flops_note` saying why) for a bundle exported before caeav recorded them; with `--roofline`, "of GEMM" = that
GFLOP/s over this machine's GEMM rate of the row's arithmetic, measured in the same run (`caeav.runtime.roofline`).
Precision "bf16" is a PyTorch-only row (CPU BF16 autocast of the same model). Preprocessing (decode of the clip +
caption features) is timed separately. PyTorch is imported only for the torch engine; without torch or a checkpoint
its rows say why.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from caeav.errors import CaeavError

from .bundle import Bundle
from .engine import load_model


UNKNOWN_FLOPS = ("the bundle records no FLOPs per clip (exported before caeav recorded them); re-export it with "
                 "`caeav export` to see them")


@dataclass
class BenchRow:
    engine: str
    precision: str
    batch: int
    status: str = "ok"
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    clips_per_s: Optional[float] = None
    gflop_s: Optional[float] = None  # achieved: the bundle's FLOPs per clip × clips/s (None: FLOPs unknown)
    peak_mem_mb: Optional[float] = None
    base_mem_mb: Optional[float] = None  # RSS when the row started (the model loaded; what earlier rows left behind)
    speedup: Optional[float] = None
    max_abs_diff: Optional[float] = None
    label_agreement: Optional[float] = None
    roofline_share: Optional[float] = None  # gflop_s / this machine's GEMM rate of the row's arithmetic (roofline.py)
    detail: str = ""


@dataclass
class BenchResult:
    bundle: str
    task: str
    clip: str
    machine: str
    preprocess_ms: dict
    rows: list = field(default_factory=list)
    date: str = ""
    agreement: str = "labels"  # what the "agree" column compares (TaskAdapter.agreement)
    flops_per_clip: Optional[int] = None  # Bundle.flops_per_clip (recorded at export); None: unknown
    flops_note: str = ""  # why GFLOP/s is unknown (empty when known)
    roofline: Optional[dict] = None  # GemmRates.to_dict() measured in this run (--roofline), else None

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [asdict(r) for r in self.rows]}


def _reset_peak() -> None:
    """Start a new peak-memory window: give freed heap back to the system first (glibc keeps the pages of a model
    just deleted, which would count against the next configuration), then reset VmHWM to the current RSS."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak may include what the previous configuration freed
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _rss_mb() -> Optional[float]:
    """The process's resident set now (VmRSS), MiB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            return next((round(int(ln.split()[1]) / 1024, 1) for ln in fh if ln.startswith("VmRSS:")), None)
    except OSError:
        return None


def _peak_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPU(s), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def synthetic_clip(folder: Path, seconds: int) -> Path:
    """A small clip (moving colour blocks, a tone) when no clip is given and no bundled sample exists."""
    from caeav.media.write import write_video

    fps, sr = 8, 32000
    frames = []
    for i in range(seconds * fps):
        img = np.zeros((96, 96, 3), np.uint8)
        x = (i * 5) % 72
        img[30:54, x:x + 24] = (220, 60 + (i * 7) % 180, 40)
        frames.append(img)
    t = np.arange(seconds * sr) / sr
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)).astype(np.float32)[None]
    path = folder / "bench-clip.mp4"
    write_video(path, frames, fps=fps, audio=audio)
    return path


def prepare_inputs(bundle: Bundle, clip: Path, repeats: int = 3, caption_endpoint=None) -> tuple[dict, dict]:
    """Model inputs for one clip (and the adapter's extra head inputs) and the preprocessing time (median ms of
    `repeats` decodes; caption lookup; the cost of captioning it on the fly: `caption_costs`)."""
    from caeav.media import decode_clip

    from .captions import CaptionSource

    decode_ms, media = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        media = decode_clip(clip, segments=bundle.segments, size=bundle.image_size, sampling=bundle.sampling,
                            st=bundle.st_sampling)
        decode_ms.append(1000 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    vis, aud, _ = CaptionSource(bundle, None).features(clip)
    caption_ms = 1000 * (time.perf_counter() - t0)
    caption_cost = caption_costs(bundle, clip, caption_endpoint)
    inputs = {"frames": media.frames[None], "wave": media.audio[None], "vis": vis[None], "aud": aud[None],
              "extra": {k: np.asarray(v) for k, v in bundle.adapter.bench_feeds(bundle).items()}}
    if media.st_frames is not None:  # AVVP's R(2+1)D-18 stream: its clips from the same decode
        from caeav.media.st_frames import st_clip_input

        inputs["st_clips"] = st_clip_input(media.st_frames, bundle.segments, bundle.st_sampling)[None]
    return inputs, {"decode_ms": round(statistics.median(decode_ms), 2), "captions_ms": round(caption_ms, 2),
                    **caption_cost}


def caption_costs(bundle: Bundle, clip: Path, endpoint=None, repeats: int = 3) -> dict:
    """What captioning a clip the cache lacks costs, per clip: `text_encoder_ms` (tokenise + the bundle's text_encoder
    graph on two captions, median of `repeats`; None without the graph) and, with a caption `endpoint`,
    `caption_endpoint_ms` (both requests of `caeav infer --caption-endpoint`, nothing stored; None without)."""
    from .caption_endpoint import EndpointCaptioner, EndpointSettings

    out = {"text_encoder_ms": None, "caption_endpoint_ms": None}
    if "text_encoder" not in bundle.manifest.get("graphs", {}):
        return out
    from caeav.errors import BundleError

    from .caption_text import TextEncoder

    try:
        enc, times = TextEncoder(bundle), []
    except BundleError as exc:  # a bundle exported before caeav wrote its caption tokeniser
        out["text_encoder_note"] = str(exc)
        return out
    texts = ["A man plays an acoustic guitar on a stage.", "Guitar music and a crowd cheering."]
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc.encode(texts)
        times.append(1000 * (time.perf_counter() - t0))
    out["text_encoder_ms"] = round(statistics.median(times), 2)
    settings = EndpointSettings.of(endpoint)
    if settings is not None:
        captioner = EndpointCaptioner(bundle, settings)
        t0 = time.perf_counter()
        got = captioner.caption(clip, Path(clip).stem, ["visual", "audio"])
        if len(got) == 2:
            out["caption_endpoint_ms"] = round(1000 * sum(g.endpoint_s for g in got.values()), 2)
    return out


def _measure(model, inputs: dict, batch: int, warmup: int, repeats: int) -> tuple[list, dict]:
    """Call times of `repeats` runs at `batch` (the clip repeated) and the first clip's outputs (no batch axis)."""
    tile = lambda v: np.repeat(v, batch, axis=0)  # noqa: E731
    args = (tile(inputs["frames"]), tile(inputs["wave"]), tile(inputs["vis"]), tile(inputs["aud"]))
    extra = {k: tile(v) for k, v in inputs["extra"].items()}
    st_clips = tile(inputs["st_clips"]) if "st_clips" in inputs else None
    out = None
    for _ in range(warmup):
        out = model.run(*args, extra=extra, st_clips=st_clips)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.run(*args, extra=extra, st_clips=st_clips)
        times.append(time.perf_counter() - t0)
    return times, model.take(out, [0], batch)


def _agreement(bundle: Bundle, out: dict, ref: dict) -> float:
    """Share of the task's predictions (outputs of one clip, batch axis kept) that agree between two engines."""
    mine, theirs = bundle.adapter.bench_labels(bundle, out), bundle.adapter.bench_labels(bundle, ref)
    return float((np.asarray(mine) == np.asarray(theirs)).mean())


def run_bench(bundle_path, engines: Sequence[str] = ("torch", "ort"), batches: Sequence[int] = (1,),
              precisions: Sequence[str] = ("fp32",), repeats: int = 10, warmup: int = 2, clip=None,
              checkpoint=None, threads: Optional[int] = None, progress=None, caption_endpoint=None,
              roofline: int = 0) -> BenchResult:
    """Measure every (engine, precision, batch) (module docstring); PyTorch FP32 runs first as the reference
    ("bf16" in `precisions` adds PyTorch BF16 autocast; it has no ONNX twin). `roofline`: also measure this
    machine's GEMM rates (`caeav.runtime.roofline`, `roofline`² matrices; 0: not measured) and give each row its
    share of them."""
    bundle = Bundle.load(bundle_path)
    if repeats < 1 or warmup < 0 or not batches or min(batches) < 1:
        raise CaeavError("bench needs repeats >= 1, warmup >= 0 and batch sizes >= 1")
    with tempfile.TemporaryDirectory(prefix="caeav-bench-") as tmp:
        if clip is None:
            from .bundle import DEFAULT_SAMPLE

            clip = DEFAULT_SAMPLE if DEFAULT_SAMPLE.is_file() else synthetic_clip(Path(tmp), bundle.segments)
        inputs, pre = prepare_inputs(bundle, Path(clip), caption_endpoint=caption_endpoint)
    result = BenchResult(str(bundle.path), bundle.task, Path(clip).name, machine_description(), pre,
                         date=time.strftime("%Y-%m-%d"), agreement=bundle.adapter.agreement,
                         flops_per_clip=bundle.flops_per_clip,
                         flops_note="" if bundle.flops_per_clip else UNKNOWN_FLOPS)
    reference: dict = {}
    for engine in ["torch"] + [e for e in dict.fromkeys(engines) if e != "torch"]:  # the reference runs first
        for precision in _engine_precisions(engine, precisions):
            _reset_peak()
            try:
                model = load_model(bundle, engine, precision, checkpoint=checkpoint, threads=threads)
            except (CaeavError, ModuleNotFoundError) as exc:
                reason = "skipped: " + " ".join(str(exc).split())[:160]
                result.rows += [BenchRow(engine, precision, b, status=reason) for b in batches]
                continue
            for batch in batches:
                if progress:
                    progress(f"{engine} {precision} batch {batch}")
                row = _row(model, engine, precision, batch, inputs, warmup, repeats, reference, result.flops_per_clip)
                result.rows.append(row)
                _reset_peak()
            del model
    if roofline:
        if progress:
            progress(f"GEMM rates ({int(roofline)}²)")
        _add_roofline(result, threads, int(roofline))
    return result


def _engine_precisions(engine: str, precisions: Sequence[str]) -> list[str]:
    """The precisions one engine runs: torch fp32 (the reference) and bf16 when asked; the others all but bf16."""
    wanted = list(dict.fromkeys(precisions))
    if engine == "torch":
        return ["fp32"] + (["bf16"] if "bf16" in wanted else [])
    return [p for p in wanted if p != "bf16"]


def _add_roofline(result: BenchResult, threads: Optional[int], size: int) -> None:
    """This machine's GEMM rates (after the engines, so they do not share the memory peaks) and each row's share;
    torch's rates too (the PyTorch reference rows always run; without torch the rates say so)."""
    from .roofline import gemm_rates

    rates = gemm_rates(threads=threads, size=size, torch_too=True)
    result.roofline = rates.to_dict()
    for row in result.rows:
        row.roofline_share = rates.share(row.precision, row.gflop_s)


def achieved_gflop_s(flops_per_clip: Optional[int], clips_per_s: Optional[float]) -> Optional[float]:
    """GFLOP/s a configuration achieved: FLOPs per clip × clips per second / 1e9 (None when either is unknown)."""
    if not flops_per_clip or not clips_per_s:
        return None
    return round(flops_per_clip * clips_per_s / 1e9, 2)


def _row(model, engine: str, precision: str, batch: int, inputs: dict, warmup: int, repeats: int,
         reference: dict, flops_per_clip: Optional[int] = None) -> BenchRow:
    row = BenchRow(engine, precision, batch, detail=model.describe(), base_mem_mb=_rss_mb())
    times, out = _measure(model, inputs, batch, warmup, repeats)
    row.peak_mem_mb = _peak_mb()
    per_clip = sorted(1000 * t / batch for t in times)
    row.p50_ms = round(statistics.median(per_clip), 2)
    row.p95_ms = round(float(np.percentile(per_clip, 95)), 2)
    speed = batch / statistics.median(times)  # unrounded: the paper model runs well under 1 clip/s on a CPU
    row.clips_per_s = float(f"{speed:.4g}")
    row.gflop_s = achieved_gflop_s(flops_per_clip, speed)
    if engine == "torch" and precision == "fp32":  # the reference (bf16 is a row compared with it)
        reference[batch] = (speed, out)
    if batch in reference:
        ref_speed, ref_out = reference[batch]
        row.speedup = round(speed / ref_speed, 2)
        row.max_abs_diff = float(max(np.abs(out[k] - ref_out[k]).max() for k in ref_out if k in out))
        row.label_agreement = _agreement(model.bundle, out, ref_out)
    return row


def _share(share: Optional[float]) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def print_bench(result: BenchResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title=f"caeav bench: {Path(result.bundle).name} ({result.task}), clip {result.clip}, "
                        f"{result.date}", title_justify="left")
    cols = ["engine", "precision", "batch", "p50 ms", "p95 ms", "clips/s", "GFLOP/s", "peak MB", "speed-up",
            "max |Δ|", "agree"] + (["of GEMM"] if result.roofline else [])
    for col in cols:
        table.add_column(col, justify="left" if col in ("engine", "precision") else "right")

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    for r in result.rows:
        if r.status != "ok":
            table.add_row(r.engine, r.precision, str(r.batch), f"[dim]{r.status}[/dim]", *[""] * (len(cols) - 4))
            continue
        table.add_row(r.engine, r.precision, str(r.batch), fmt(r.p50_ms, ".1f"), fmt(r.p95_ms, ".1f"),
                      fmt(r.clips_per_s, ".3g"), "?" if r.gflop_s is None else f"{r.gflop_s:.1f}",
                      fmt(r.peak_mem_mb, ".0f"),
                      "-" if r.speedup is None else f"{r.speedup:.2f}x", fmt(r.max_abs_diff, ".2e"),
                      "-" if r.label_agreement is None else f"{100 * r.label_agreement:.0f} %",
                      *([_share(r.roofline_share)] if result.roofline else []))
    console.print(table)
    console.print(f"latency per clip; speed-up and parity (max |Δ| of the head outputs, share of {result.agreement} "
                  "that agree) against PyTorch FP32 eager at the same batch, measured in this run", style="dim")
    if result.flops_per_clip:
        console.print(f"GFLOP/s = {result.flops_per_clip / 1e9:,.2f} GFLOP per clip (counted at export, the graphs "
                      "one clip runs) × clips/s", style="dim")
    else:
        console.print(f"GFLOP/s unknown (?): {result.flops_note or UNKNOWN_FLOPS}", style="dim")
    if result.roofline:
        got = result.roofline["measured_gflop_s"]
        console.print(f"of GEMM = GFLOP/s over this machine's {result.roofline['size']}² GEMM rate measured in this run "
                      "(fp32/fp16 rows: best FP32; bf16: torch BF16; int8: ORT MatMulInteger u8×s8): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in got.items() if v) + " GFLOP/s"
                      + "".join(f"; {n}" for n in result.roofline["notes"]), style="dim")
    pre = result.preprocess_ms
    console.print(f"preprocessing per clip (not in the latencies above): decode {pre['decode_ms']:.1f} ms, "
                  f"captions {pre['captions_ms']:.1f} ms; machine: {result.machine}", style="dim")
    if pre.get("text_encoder_note"):
        console.print(f"captions on the fly: not measured ({pre['text_encoder_note']})", style="dim")
    if pre.get("text_encoder_ms") is not None:  # what a clip the caption cache lacks costs on top (per clip)
        asked = pre.get("caption_endpoint_ms")
        console.print(f"captions on the fly per clip: text encoder {pre['text_encoder_ms']:.1f} ms, endpoint "
                      + (f"{asked:.0f} ms" if asked is not None else "not measured (no endpoint)"), style="dim")
