"""AVVP with the R(2+1)D-18 stream as a user runs it (`tiny`): `caeav data synth avvp` -> `caeav train avvp` ->
`caeav export` -> `caeav parity` -> `caeav infer` on a synthetic clip where torch cannot be imported; plus the one
decode that gives both the model's frames and the stream's, and the same labels from onnxruntime and PyTorch.

One training run and one export per session (module fixture); FP16/INT8 of the stream are `slow`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from caeav.cli.main import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::caeav.media.MediaWarning")


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("avvp-flow")
    data, run, bundle = root / "llp", root / "run", root / "bundle"
    assert main(["data", "synth", "avvp", "--out", str(data), "--clips", "2"]) == 0  # videos: features computed
    assert not (data / "feats").exists()
    assert main(["train", "avvp", "--config", "tiny", "--data-root", str(data), "--out", str(run), "-q",
                 "--media-cache", str(root / "cache"), "task.train.epochs=1"]) == 0
    assert main(["export", "--checkpoint", str(run / "best"), "--engine", "onnx", "--batch", "1:2:2",
                 "--out", str(bundle)]) == 0
    clip = sorted((data / "videos").iterdir())[0]
    return {"data": data, "run": run, "bundle": bundle, "clip": clip, "root": root}


def test_the_stream_is_a_graph_of_the_bundle_and_parity_covers_it(flow):
    bundle = flow["bundle"]
    assert main(["parity", str(bundle), "--clips", str(flow["data"] / "videos")]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    stream = manifest["graphs"]["st_stream"]
    assert [(i["name"], i["shape"]) for i in stream["inputs"]] == [("st_clips", ["batch", 10, 3, 4, 32, 32])]
    assert [(o["name"], o["shape"]) for o in stream["outputs"]] == [("st", ["batch", 10, 32])]
    assert "st" in [i["name"] for i in manifest["graphs"]["head"]["inputs"]]
    fp32 = manifest["parity"]["precisions"]["fp32"]
    assert fp32["passed"] and fp32["graphs"]["st_stream"]["st"]["max_abs"] < 1e-4
    assert "clips-" in " ".join(manifest["parity"]["inputs"])  # real clips, their stream frames decoded
    sampling = json.loads((bundle / "postprocess.json").read_text())["st_sampling"]
    assert sampling == {"frames": 4, "fps": 4.0, "size": 32, "mean": [0.43216, 0.394666, 0.37645],
                        "std": [0.22803, 0.22145, 0.216989]}
    assert manifest["config"]["task"]["authors_audio_bypass"] is False


def test_infer_writes_a_10_s_avvp_timeline_where_torch_cannot_be_imported(flow, tmp_path):
    out = tmp_path / "r.json"
    argv = ["infer", str(flow["clip"]), "--bundle", str(flow["bundle"]), "--engine", "ort", "--json", str(out)]
    prog = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now fails
        from caeav.cli.main import main
        code = main({argv!r})
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    (video,) = doc["videos"]
    assert not doc["failures"] and video["seconds"] == 10 and len(video["per_second"]) == 10
    assert set(video["events"]) == {"audio", "visual", "audio_visual"}


def test_onnxruntime_and_pytorch_give_the_same_events(flow):
    from caeav.runtime import InferOptions, Pipeline

    seen = {}
    for engine in ("ort", "torch"):
        (result,) = Pipeline(flow["bundle"], InferOptions(engine=engine)).run([flow["clip"]]).results
        seen[engine] = result.timeline
    assert seen["ort"]["events"] == seen["torch"]["events"]
    for key in ("prob_audio", "prob_visual"):
        np.testing.assert_allclose(seen["ort"]["arrays"][key], seen["torch"]["arrays"][key], atol=1e-4)


def test_the_runtime_decodes_the_stream_frames_in_the_same_pass(flow):
    """Model frames are those of a decode without the stream; stream frames those the training loader computed its
    features from (`decode_st_frames`), and the stream graph on them gives the features the loader cached."""
    from caeav.media import decode_raw
    from caeav.media.st_frames import STSampling, decode_st_frames, st_clip_input
    from caeav.runtime import InferOptions, Pipeline
    from caeav.runtime.bundle import Bundle

    bundle = Bundle.load(flow["bundle"])
    sampling = bundle.st_sampling
    assert sampling == STSampling(4, 4.0, 32)
    both = decode_raw(flow["clip"], 10, bundle.image_size, sampling=bundle.sampling, st=sampling)
    plain = decode_raw(flow["clip"], 10, bundle.image_size, sampling=bundle.sampling)
    np.testing.assert_array_equal(both.frames, plain.frames)
    assert plain.st_frames is None and both.st_frames.shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(both.st_frames, decode_st_frames(flow["clip"], 10, sampling))
    pipe = Pipeline(flow["bundle"], InferOptions(engine="ort"))
    decoded = pipe.decode(0, str(flow["clip"]))
    np.testing.assert_array_equal(decoded.st_frames[0], both.st_frames)
    feats = pipe.model.graphs["st_stream"].run({"st_clips": st_clip_input(both.st_frames, 10, sampling)[None]})["st"]
    cached = [np.load(p) for p in (flow["root"] / "cache").rglob("*.st.npy")]
    assert cached and any(np.allclose(c, feats[0], atol=1e-4) for c in cached)


@pytest.mark.slow
def test_fp16_and_int8_stream_graphs_pass_parity(flow, tmp_path):
    out = tmp_path / "b"
    assert main(["export", "--checkpoint", str(flow["run"] / "best"), "--engine", "onnx", "--precision",
                 "fp16,int8", "--calib", str(flow["data"] / "videos"), "--batch", "1:2:2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"st_stream.fp16", "st_stream.int8"} <= set(manifest["graphs"]) and manifest["calibration"] == "clips"
    assert main(["parity", str(out)]) == 0
    report = json.loads((out / "manifest.json").read_text())["parity"]
    for precision in ("fp16", "int8"):
        assert report["precisions"][precision]["graphs"]["st_stream"]["st"]["cosine"] >= 0.99
