"""INT8 end to end: `caeav export --precision int8 --calib DATASET` on a tiny AVE model, then `caeav parity`: the
Q/DQ encoder's features keep cosine >= 0.99 against PyTorch FP32 and the prediction agreement is reported."""

import pytest

from caeav.cli.main import main
from caeav.export.manifest import read_manifest, verify_bundle

pytest.importorskip("modelopt.onnx.quantization", reason="Model Optimizer is in the export extra")


@pytest.mark.slow
def test_int8_bundle_calibrated_on_clips_passes_parity(tmp_path):
    from caeav.data.synth import synth_dataset

    data = tmp_path / "ave"
    synth_dataset("ave", data, seed=3, clips=4, media="video")
    out = tmp_path / "bundle"
    assert main(["export", "--config", "tiny", "--random-weights", "--task", "ave", "--precision", "int8",
                 "--calib", str(data), "--batch", "1:2:2", "--out", str(out)]) == 0
    manifest = verify_bundle(out)  # quantisation left the FP32 graphs as the manifest recorded them
    assert manifest["calibration"] == "clips" and "encoder.int8" in manifest["graphs"]
    code = main(["parity", str(out)])
    int8 = read_manifest(out)["parity"]["precisions"]["int8"]
    enc = int8["graphs"]["encoder"]
    print("int8 encoder cosine", enc["v"]["cosine"], enc["a"]["cosine"], "agreement",
          int8["end_to_end"]["agreement"])
    assert min(enc["v"]["cosine"], enc["a"]["cosine"]) >= 0.99
    assert 0.0 <= int8["end_to_end"]["agreement"] <= 1.0  # reported
    assert code == 0, int8["failures"]
