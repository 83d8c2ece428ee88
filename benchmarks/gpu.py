"""The paper model on one CUDA GPU (issue 17's GPU bullet): one prepared run that writes a JSON report.

    python benchmarks/gpu.py                       # paper AVE, batch 1 and 16 -> $OUT/gpu-report.json (else ./)
    python benchmarks/gpu.py --out report.json --batches 1,16 --budget-s 330
    python benchmarks/gpu.py --dry-run             # the same code path on the CPU with `tiny` (what the tests run)

What it measures, in this order, each step guarded so that a failure or the time budget skips a row, not the report:

1. the machine: torch / CUDA versions, the GPU's name, compute capability and memory, and its dense BF16 peak
   (`DENSE_BF16_TFLOPS`, from the vendor's data sheets; no sparsity);
2. FLOPs per clip of the model, from `caeav.model.flops` (meta device, 1 multiply-add = 2 FLOPs);
3. PyTorch, random weights built on the device (no weight files), eval, no gradients, at every batch: FP32 eager
   (TF32 off), BF16 autocast, FP16 autocast, and `torch.compile` (default mode) under BF16 autocast; per row the
   latency per call (median of `repeats` after `warmup`, CUDA-synchronised), ms per clip, clips/s, peak CUDA memory
   (`max_memory_allocated` since the row began), achieved TFLOP/s and its share of the dense BF16 peak;
4. onnxruntime: its providers, and with `--bundle` (or `--export-tiny`) the bundle's FP32 graphs timed on the CUDA
   provider at batch 1 (`caeav.runtime.engine.load_model`);
5. TensorRT: `ldconfig -p | grep nvinfer` and `import tensorrt`; where both are there and `--export-tiny` was given,
   a tiny FP16 bundle with TensorRT engines is built (`caeav export --engine trt`) and benched (`caeav bench`).

`--dry-run` (implied without CUDA) runs steps 1-5 on the CPU with `--config tiny` (one block per stage), batch 1,
two repeats and `torch.compile(backend="eager")` (dynamo traces the model, no C++ build), so the whole script is
tested here in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# dense (no sparsity) BF16 tensor-core peak, TFLOP/s, by device-name fragment (first match wins)
DENSE_BF16_TFLOPS = (("H100 PCIe", 756.5), ("H100 NVL", 835.5), ("GH200", 989.4), ("H200", 989.4), ("H100", 989.4),
                     ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0))
MODES = ("fp32_eager", "bf16_autocast", "fp16_autocast", "compile_bf16")
DRY_TRIM = ["visual.depths=[1,1,1,1]", "audio.depths=[1,1,1,1]"]  # a dry run: one block per stage, less tracing


def bf16_peak(name: str):
    """The dense BF16 peak (TFLOP/s) of a GPU named `name`, or None when unknown."""
    return next((peak for key, peak in DENSE_BF16_TFLOPS if key in name), None)


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": str(device), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), dense_bf16_tflops=bf16_peak(props.name))
    return info


def model_inputs(cfg, model, batch: int, device: torch.device) -> dict:
    """Deterministic inputs of `batch` clips (`caeav.export.inputs.sample_inputs`) on `device`."""
    from caeav.export.inputs import sample_inputs

    st_dim = int(getattr(model.head, "st_dim", 0) or 0) if cfg.task.name == "avvp" else 0
    feeds = sample_inputs(cfg, batch, 0, st_dim=st_dim)
    keys = ("frames", "wave", "vis_caption", "aud_caption", "question", "st_clips")
    return {k: torch.from_numpy(feeds[k]).to(device) for k in keys if k in feeds}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, warmup: int, repeats: int) -> list:
    """Seconds per call of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def mode_call(model, mode: str, inputs: dict, device: torch.device, backend: str):
    """A no-argument callable running one forward of `model` in `mode` (`MODES`)."""
    dtype = {"bf16_autocast": torch.bfloat16, "fp16_autocast": torch.float16, "compile_bf16": torch.bfloat16}.get(mode)
    run = torch.compile(model, backend=backend) if mode == "compile_bf16" else model

    def call():
        with torch.inference_mode():
            if dtype is None:
                return run(**inputs)
            with torch.autocast(device.type, dtype=dtype):
                return run(**inputs)

    return call


def torch_rows(cfg, device, batches, warmup, repeats, flops, peak, backend, deadline) -> list:
    """Step 3 of the module docstring: one row per (mode, batch)."""
    from caeav.model.cae_av import build_model

    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = build_model(cfg, load_weights=False).eval()
    build_s = round(time.perf_counter() - t0, 2)
    rows = []
    for mode in MODES:
        for batch in batches:
            row = {"mode": mode, "batch": batch, "status": "ok", "build_s": build_s}
            rows.append(row)
            if time.monotonic() > deadline:
                row["status"] = "skipped: time budget"
                continue
            try:
                inputs = model_inputs(cfg, model, batch, device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                t1 = time.perf_counter()
                call = mode_call(model, mode, inputs, device, backend)
                call()  # the first call (compilation for torch.compile) is timed apart
                _sync(device)
                row["first_call_s"] = round(time.perf_counter() - t1, 2)
                times = time_calls(call, device, warmup, repeats)
            except Exception as exc:  # CUDA OOM, a compile failure, ...: the row says so, the run goes on
                row["status"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                continue
            med = statistics.median(times)
            row.update(latency_ms=round(1000 * med, 3), ms_per_clip=round(1000 * med / batch, 3),
                       clips_per_s=round(batch / med, 2), tflop_s=round(flops * batch / med / 1e12, 6))
            if device.type == "cuda":
                row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if peak:
                row["share_of_dense_bf16_peak"] = round(row["tflop_s"] / peak, 4)
    return rows


def ort_section(bundle, warmup: int, repeats: int) -> dict:
    """Step 4: onnxruntime's providers; the bundle's FP32 chain on CUDA (or the CPU in a dry run) at batch 1."""
    import numpy as np

    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"status": f"skipped: {exc}"}
    out = {"version": ort.__version__, "providers": ort.get_available_providers()}
    if bundle is None:
        out["status"] = "skipped: no --bundle / --export-tiny"
        return out
    from caeav.export.inputs import sample_inputs
    from caeav.runtime.bundle import Bundle
    from caeav.runtime.engine import load_model

    b = Bundle.load(bundle)
    cuda = "CUDAExecutionProvider" in out["providers"]
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    try:
        from caeav.config import ModelConfig

        model = load_model(b, "ort", "fp32", providers=providers)
        feeds = sample_inputs(ModelConfig.from_dict(b.manifest["config"]), 1, 0)
        args = [feeds[k].astype(np.float32) for k in ("frames", "wave", "vis_caption", "aud_caption")]
        extra = {k: np.asarray(v) for k, v in b.adapter.bench_feeds(b).items()}
        times = time_calls(lambda: model.run(*args, extra=extra), torch.device("cpu"), warmup, repeats)
    except Exception as exc:
        out["status"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return out
    med = statistics.median(times)
    flops = b.flops_per_clip
    out.update(status="ok", bundle=str(bundle), engine=model.describe(), providers_used=providers,
               latency_ms=round(1000 * med, 3), tflop_s=round(flops / med / 1e12, 4) if flops else None)
    return out


def tensorrt_section(tiny_trt: bool, tmp: Path, timeout: int) -> dict:
    """Step 5: are TensorRT's libraries there; if so (and asked), build and bench a tiny FP16 engine bundle."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    out = {"nvinfer_libraries": [ln.strip() for ln in listing.splitlines() if "nvinfer" in ln]}
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except Exception as exc:  # ImportError, or a library that fails to load
        out["tensorrt"] = None
        out["import_error"] = f"{type(exc).__name__}: {exc}"[:200]
    if not (tiny_trt and out["tensorrt"] and out["nvinfer_libraries"]):
        out["engines"] = "skipped: " + ("not asked (--export-tiny)" if not tiny_trt else "TensorRT is not there")
        return out
    bundle, report = tmp / "tiny-trt", tmp / "tiny-trt-bench.json"
    cli = [sys.executable, "-m", "caeav.cli.main"]
    try:
        t0 = time.perf_counter()
        subprocess.run(cli + ["export", "--config", "tiny", "--random-weights", "--task", "ave", "--engine", "trt",
                              "--precision", "fp16", "--out", str(bundle)], check=True, timeout=timeout,
                       capture_output=True)
        out["engine_build_s"] = round(time.perf_counter() - t0, 1)
        subprocess.run(cli + ["bench", str(bundle), "--engines", "ort,trt", "--precisions", "fp16", "--json",
                              str(report)], check=True, timeout=timeout, capture_output=True)
        out["bench"] = json.loads(report.read_text())
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        out["engines"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return out


def export_tiny(tmp: Path, timeout: int):
    """A tiny FP32 AVE bundle (random weights) for the onnxruntime step, or None when the export fails."""
    out = tmp / "tiny"
    try:
        subprocess.run([sys.executable, "-m", "caeav.cli.main", "export", "--config", "tiny", "--random-weights",
                        "--task", "ave", "--out", str(out)], check=True, timeout=timeout, capture_output=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return out


def run(args) -> dict:
    from caeav.config import load_config
    from caeav.model.flops import flops_report

    start = time.monotonic()
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    config = "tiny" if dry else args.config
    batches = [1] if dry else [int(b) for b in args.batches.split(",")]
    repeats, warmup = (2, 1) if dry else (args.repeats, args.warmup)
    backend = "eager" if dry else args.compile_backend
    cfg = load_config(config, args.task, DRY_TRIM if dry else None)
    flops = int(flops_report(cfg)["total"])
    info = machine(device)
    report = {"schema": "caeav.bench-gpu/1", "date": time.strftime("%Y-%m-%d"), "dry_run": dry, "config": config,
              "task": cfg.task.name, "weights": "random (built on the device)", "machine": info,
              "flops_per_clip": flops, "convention": "1 multiply-add = 2 FLOPs (caeav.model.flops)",
              "compile_backend": backend}
    report["torch"] = torch_rows(cfg, device, batches, warmup, repeats, flops, info.get("dense_bf16_tflops"),
                                 backend, start + args.budget_s)
    with tempfile.TemporaryDirectory(prefix="caeav-gpu-") as tmp:
        bundle = args.bundle or (export_tiny(Path(tmp), 300) if args.export_tiny else None)
        report["onnxruntime"] = ort_section(bundle, warmup, repeats)
        report["tensorrt"] = tensorrt_section(args.export_tiny and not dry, Path(tmp), 300)
    report["wall_s"] = round(time.monotonic() - start, 1)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="report path (default: $OUT/gpu-report.json, else ./)")
    parser.add_argument("--config", default="paper")
    parser.add_argument("--task", default="ave")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=330.0, help="rows after this many seconds are skipped")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--bundle", type=Path, default=None, help="a bundle for the onnxruntime step")
    parser.add_argument("--export-tiny", action="store_true", help="export a tiny bundle for onnxruntime/TensorRT")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny, batches 1 and 2 (module docstring)")
    args = parser.parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or ".") / "gpu-report.json"
    try:
        report = run(args)
    except Exception as exc:  # e.g. an unknown --config: one line, no traceback
        print(f"benchmarks/gpu.py: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    from caeav.files import write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    for row in report["torch"]:
        print(f"{row['mode']:>14} batch {row['batch']:>3}: " + (f"{row['ms_per_clip']:9.2f} ms/clip "
              f"{row['clips_per_s']:8.2f} clips/s {row['tflop_s']:8.3f} TFLOP/s" if row["status"] == "ok"
              else row["status"]))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
