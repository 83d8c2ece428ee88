"""One tiny AVE bundle per test process for the modules that only read a bundle (test_bench_flops, test_bundle_lean).

`tiny_ave_bundle(tmp_path_factory)` exports it once through `caeav export` (random weights, FP32 + FP16 + INT8 + INT8-CPU, one
block per Swin / HTS-AT stage as test_runtime_avqa's TRIM: a third less export time) and hands every later caller the
same directory, so a module that needs a real bundle does not add an export of its own. Treat it as read-only: a test
that changes a bundle copies it first.
"""

from __future__ import annotations

from pathlib import Path

TRIM = ["visual.depths=[1,1,1,1]", "audio.depths=[1,1,1,1]"]
PRECISIONS = "fp16,int8,int8cpu"
_MADE: dict = {}


def tiny_ave_bundle(tmp_path_factory) -> Path:
    """The shared tiny AVE bundle (module docstring)."""
    if "ave" not in _MADE:
        from caeav.cli.main import main

        out = tmp_path_factory.mktemp("tiny-ave-shared") / "bundle"
        assert main(["export", "--config", "tiny", "--random-weights", "--task", "ave", "--precision", PRECISIONS,
                     "--batch", "1:2:2", "--out", str(out), *TRIM]) == 0, "caeav export failed"
        _MADE["ave"] = out
    return _MADE["ave"]
