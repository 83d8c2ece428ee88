"""`caeav infer` on AVS bundles: masks (PNG per sampled frame, JSON frames, terminal lines), the overlay video, bad
output folders, and the real `tiny` AVS model: the whole command where torch cannot be imported, onnxruntime's masks
against `--engine torch` on the same weights, `caeav bench`.

The toy AVS bundle (tests/runtime_bundles.py) makes the masks known exactly: mask logits = 10 x the channel mean of the
normalised frame, so the clip's bright square is the mask. The `tiny` export takes a few minutes on 2 cores and is
made once for this module (the `loadfile` distribution keeps the module on one worker).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from caeav.cli.main import main
from caeav.media.write import write_video
from runtime_bundles import model_bundle, toy_bundle

REPO = Path(__file__).resolve().parent.parent
W, H, FPS = 64, 48, 4


def square_clip(path: Path, seconds: int, size=(W, H), fps: int = FPS, step: int = 4) -> Path:
    """A bright 24x24 square on black, moving `step` px right each second, over a 440 Hz tone."""
    frames = []
    for i in range(seconds * fps):
        img = np.full((size[1], size[0], 3), 5, np.uint8)
        x = 8 + (i // fps) * step
        img[12:36, x:x + 24] = 250
        frames.append(img)
    t = np.arange(seconds * 16000) / 16000
    write_video(path, frames, fps=fps, audio=(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                sample_rate=16000)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("avs-toy")
    return {"bundle": toy_bundle(root / "bundle", "avs_s4"), "clip": square_clip(root / "sq.mp4", 7),
            "short": square_clip(root / "short.mp4", 3)}


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def check_masks(folder: Path, frames: list, size=(W, H)) -> list:
    """Every JSON frame names a PNG in `folder` at the video's size whose pixels give its area and bbox."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(f["mask"] for f in frames)
    masks = []
    for f in frames:
        with Image.open(folder / f["mask"]) as img:
            assert img.size == size and img.mode == "1"
            mask = np.asarray(img, dtype=bool)
        assert f["area"] == pytest.approx(mask.mean(), abs=1e-6)
        ys, xs = np.nonzero(mask)
        assert f["bbox"] == ([int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if xs.size else None)
        masks.append(mask)
    return masks


def decoded_video(path: Path) -> tuple[int, int, float, int, list]:
    """(width, height, frame rate, frame count, stream types) of a video file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        count = sum(1 for _ in c.decode(video=0))
        return v.codec_context.width, v.codec_context.height, float(v.average_rate), count, [s.type for s in c.streams]


# ------------------------------------------------------------------------------------------- toy: exact masks

def test_masks_json_and_terminal_one_line_per_frame(toy, tmp_path, capsys):
    masks, out = tmp_path / "masks", tmp_path / "r.json"
    code = main(["infer", str(toy["clip"]), "--bundle", str(toy["bundle"]), "--masks", str(masks), "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    (video,) = doc["videos"]
    assert doc["schema"] == "caeav.infer/2" and video["resolution"] == [W, H] and video["seconds"] == 7
    assert video["windows"] == [{"start": 0, "end": 5}, {"start": 2, "end": 7}]  # 5-s windows, the last moved back
    frames = video["frames"]
    assert [f["time"] for f in frames] == [k + 0.5 for k in range(7)]  # the centre frame of every second
    assert [f["mask"] for f in frames] == [f"sq_t{k:03d}.50.png" for k in range(7)]
    assert [f["bbox"] for f in frames] == [[8 + 4 * k, 12, 31 + 4 * k, 35] for k in range(7)]  # the square, exactly
    assert all(f["area"] == pytest.approx(24 * 24 / (W * H)) for f in frames)
    check_masks(masks, frames)
    rows = [ln for ln in captured.out.splitlines() if ".png" in ln]
    assert len(rows) == 7 and "[8, 12, 31, 35]" in rows[0] and "18.8 %" in rows[0]


def test_short_clip_is_padded_and_reports_its_own_frames(toy, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["infer", str(toy["short"]), "--bundle", str(toy["bundle"]), "--json", str(out), "-q"]) == 0
    (video,) = json.loads(out.read_text())["videos"]
    assert [f["time"] for f in video["frames"]] == [0.5, 1.5, 2.5] and video["frames"][0]["mask"] is None
    assert any("shorter than the model's 5-s window" in w for w in video["warnings"])


def test_overlay_has_the_clips_resolution_frames_and_audio(toy, tmp_path, capsys):
    overlay = tmp_path / "ov.mp4"
    assert main(["infer", str(toy["clip"]), "--bundle", str(toy["bundle"]), "--overlay", str(overlay), "-q"]) == 0
    assert decoded_video(overlay) == decoded_video(toy["clip"])[:3] + (7 * FPS, ["video", "audio"])
    with av.open(str(overlay)) as ov, av.open(str(toy["clip"])) as src:
        tinted = [f.to_ndarray(format="rgb24").astype(int) for f in ov.decode(video=0)][6]  # t = 1.5 s
        plain = [f.to_ndarray(format="rgb24").astype(int) for f in src.decode(video=0)][6]
    inside, outside = (slice(16, 32), slice(16, 32)), (slice(40, 48), slice(0, 8))
    assert plain[inside].mean(axis=(0, 1))[1] > 200 and tinted[inside].mean(axis=(0, 1))[1] < 150  # tinted red
    assert np.abs(tinted[outside] - plain[outside]).mean() < 8  # the rest of the frame as it was
    assert list(tmp_path.iterdir()) == [overlay]  # no temporary file left


def test_overlay_and_masks_of_several_clips_are_named_per_clip(toy, tmp_path, capsys):
    overlay, masks = tmp_path / "ov.mp4", tmp_path / "m"
    code = main(["infer", str(toy["clip"]), str(toy["short"]), "--bundle", str(toy["bundle"]), "--overlay",
                 str(overlay), "--masks", str(masks), "-q"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "ov_short.mp4", "ov_sq.mp4"]
    assert len(list(masks.glob("sq_t*.png"))) == 7 and len(list(masks.glob("short_t*.png"))) == 3


@pytest.mark.parametrize("where", ["/proc/caeav-masks", "{file}/masks"])
def test_unwritable_masks_folder_is_one_line_and_leaves_nothing(toy, tmp_path, capsys, where):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    code = main(["infer", str(toy["clip"]), "--bundle", str(toy["bundle"]), "--masks", where.format(file=plain),
                 "-q"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "--masks" in line and ("cannot write" in line or "is a file" in line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"] and not Path("/proc/caeav-masks").exists()


def test_a_failure_while_writing_masks_leaves_no_half_written_set(toy, tmp_path, capsys, monkeypatch):
    import caeav.runtime.tasks.avs_files as files

    saved = []
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if len(saved) == 3:
            raise OSError(28, "No space left on device")
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(files.Image.Image, "save", save)
    masks = tmp_path / "masks"
    code = main(["infer", str(toy["clip"]), "--bundle", str(toy["bundle"]), "--masks", str(masks), "-q"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and line == f"caeav: error: --masks {masks}: cannot be written (No space left on device)"
    assert len(saved) == 3 and not masks.exists()  # three PNGs were written, none is left, nor the folder


# ------------------------------------------------------------------------------------------- the tiny AVS model

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-avs")
    bundle, _ = model_bundle(root, "avs_s4")
    return {"bundle": bundle, "clip": square_clip(root / "clip.mp4", 6, size=(80, 60), step=6)}


def test_whole_command_where_torch_cannot_be_imported(tiny, tmp_path):
    masks, overlay, out, png = tmp_path / "masks", tmp_path / "ov.mp4", tmp_path / "r.json", tmp_path / "f.png"
    argv = ["infer", str(tiny["clip"]), "--bundle", str(tiny["bundle"]), "--engine", "ort", "--masks", str(masks),
            "--overlay", str(overlay), "--json", str(out), "--plot", str(png)]
    prog = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now fails
        from caeav.cli.main import main
        sys.exit(main({argv!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (video,) = json.loads(out.read_text())["videos"]
    assert video["seconds"] == 6 and len(video["frames"]) == 6 and video["resolution"] == [80, 60]
    check_masks(masks, video["frames"], size=(80, 60))
    assert decoded_video(overlay) == decoded_video(tiny["clip"])[:3] + (6 * FPS, ["video", "audio"])
    assert video["overlay"] == str(overlay)
    with Image.open(png) as img:
        assert img.width >= 1200
    assert proc.stdout.count(".png") == 6  # one terminal line per frame


def test_onnxruntime_masks_equal_pytorch_on_the_same_weights(tiny):
    """The masks `caeav infer` reports agree on >= 99 % of pixels between the engines. The random model's logits
    all lie below 0 (empty masks), so the same comparison is also made at the clip's median logit, where half the
    pixels are on: that one would catch engines that disagree."""
    from caeav.model.heads.postprocess_avs import avs_predict
    from caeav.runtime import InferOptions, Pipeline

    masks, logits = {}, {}
    for engine in ("ort", "torch"):
        pipe = Pipeline(tiny["bundle"], InferOptions(engine=engine))
        (result,) = pipe.run([tiny["clip"]]).results
        masks[engine] = result.timeline["arrays"]["masks"]
        d = pipe.decode(0, str(tiny["clip"]))
        caps = np.stack([d.vis_caption] * len(d.starts))
        logits[engine] = pipe.model.run(d.frames, d.wave, caps, np.stack([d.aud_caption] * len(d.starts)))["masks"]
    assert masks["ort"].shape == (6, 64, 64)
    assert float((masks["ort"] == masks["torch"]).mean()) >= 0.99
    assert np.abs(logits["ort"] - logits["torch"]).max() < 1e-3
    median = np.median(logits["torch"])
    at_median = [avs_predict(logits[e] - median, 5) for e in ("ort", "torch")]
    assert 0.3 < at_median[1].mean() < 0.7 and float((at_median[0] == at_median[1]).mean()) >= 0.99


def test_bench_compares_mask_pixels(tiny):
    from caeav.runtime.bench import run_bench

    result = run_bench(tiny["bundle"], engines=["torch", "ort"], batches=[2], repeats=1, warmup=0,
                       clip=tiny["clip"])
    rows = {r.engine: r for r in result.rows}
    assert rows["torch"].status == "ok" and rows["ort"].status == "ok", result.rows
    assert rows["ort"].max_abs_diff < 1e-3 and rows["ort"].label_agreement >= 0.99
    assert result.agreement == "mask pixels"
