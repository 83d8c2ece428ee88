"""The data of the caption-at-inference tests (tests/test_runtime_tokenizer.py, tests/test_infer_caption_endpoint.py):
the shared tiny AVE bundle of tests/tiny_exports.py (exported once per test process) and one synthetic AVE dataset
with videos, made once per session as well."""

from __future__ import annotations

from pathlib import Path

from tiny_exports import tiny_ave_bundle

_MADE: dict = {}


def tiny_ave(tmp_path_factory) -> dict:
    """{"bundle": the shared bundle dir (read-only), "root": synthetic AVE dataset (3 clips, videos only),
    "videos": [3 paths]}."""
    if "ave" not in _MADE:
        from caeav.data.synth import synth_dataset

        root = tmp_path_factory.mktemp("caption-clips") / "ave"
        synth_dataset("ave", root, seed=3, clips=1, media="video")  # 3 clips (one per split)
        _MADE["ave"] = {"bundle": tiny_ave_bundle(tmp_path_factory), "root": root,
                        "videos": sorted(Path(root, "videos").iterdir())}
    return _MADE["ave"]
