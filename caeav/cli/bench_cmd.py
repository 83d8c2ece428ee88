"""`caeav bench`: parse arguments and call `caeav.runtime.bench` (benchmarks/bench.py is the same thing as a script)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from caeav.cli.options import comma_list, elapsed_log
from caeav.errors import CaeavError


def bench(
    bundle: Path = typer.Argument(..., help="export bundle"),
    engines: str = typer.Option("torch,ort", "--engines", help="comma list of torch, ort, trt"),
    batch: str = typer.Option("1", "--batch", help="comma list of batch sizes, e.g. 1,2"),
    precisions: str = typer.Option("fp32", "--precisions", help="comma list of fp32, fp16, int8, int8cpu (the "
                                   "bundle's graphs) and bf16 (PyTorch CPU BF16 autocast)"),
    repeats: int = typer.Option(10, "--repeats", help="timed calls per configuration"),
    warmup: int = typer.Option(2, "--warmup", help="untimed calls first"),
    clip: Optional[Path] = typer.Option(None, "--clip", help="video to run (default: bundled sample, else a "
                                        "synthetic clip)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="weights for the PyTorch reference"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads for every engine"),
    caption_endpoint: Optional[str] = typer.Option(None, "--caption-endpoint", help="also time captioning the clip "
                                                   "on the fly (an OpenAI-compatible URL, as caeav infer)"),
    roofline: bool = typer.Option(False, "--roofline", help="also measure this machine's FP32/BF16/INT8 GEMM rates "
                                  "(same threads) and print each row's share of them"),
    roofline_size: int = typer.Option(4096, "--roofline-size", help="matrix size N of the N×N GEMMs of --roofline"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the table as JSON (gflop_s per row; "
                                            "null with flops_note for a bundle that records no FLOPs)"),
) -> None:
    """Latency, throughput, achieved GFLOP/s, memory, speed-up and parity of each engine against PyTorch FP32 eager."""
    from caeav.files import write_json_atomic
    from caeav.runtime.bench import print_bench, run_bench

    engine_list = comma_list(engines, "--engines", ("torch", "ort", "trt"))
    from caeav.runtime.bundle import PRECISIONS
    from caeav.runtime.session_torch import TORCH_PRECISIONS

    precision_list = comma_list(precisions, "--precisions", tuple(dict.fromkeys(PRECISIONS + TORCH_PRECISIONS)))
    try:
        batches = [int(b) for b in comma_list(batch, "--batch")]
    except ValueError:
        raise CaeavError(f"--batch: expected integers like 1,2; got {batch!r}") from None
    result = run_bench(bundle, engine_list, batches, precision_list, repeats, warmup, clip, checkpoint, threads,
                       caption_endpoint=caption_endpoint, progress=elapsed_log(),
                       roofline=roofline_size if roofline else 0)
    print_bench(result)
    if json_out is not None:
        write_json_atomic(json_out, result.to_dict())
