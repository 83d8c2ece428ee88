"""caeav.media: decoding real containers into model inputs, and every way a media file can be bad.

Clips are written with PyAV into tmp_path. Frame i of a test clip is a flat grey of level 8 + 3 i, so the decoded
frame tells which source frame was picked (H.264 keeps flat frames within a level or two).
"""

import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from caeav.cli.main import main
from caeav.errors import MediaError
from caeav.media import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MediaWarning,
    decode_clip,
    decode_raw,
    frame_instants,
    linspace_indices,
    normalize_frames,
    probe,
    segment_waveform,
)
from caeav.media.write import write_video

SR = 32000
pytestmark = pytest.mark.filterwarnings("ignore::caeav.media.MediaWarning")


def grey_frames(n, h=32, w=32):
    return [np.full((h, w, 3), 8 + 3 * i, dtype=np.uint8) for i in range(n)]


def picked(frames_u8):
    """Source frame index of each decoded grey frame."""
    return [int(round((float(f.mean()) - 8) / 3)) for f in frames_u8]


def tone(seconds, freq=440.0, amp=0.3, rate=SR, silent_until=0.0):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * (t >= silent_until)).astype(np.float32)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def clip4(tmp_path_factory):
    """4 s, 8 fps, 32 x 32, mono 32 kHz AAC that is silent for 2 s, then a 440 Hz tone."""
    path = tmp_path_factory.mktemp("media") / "clip4.mp4"
    write_video(path, grey_frames(32), fps=8, audio=tone(4, silent_until=2.0)[None])
    return path


def write_audio_only(path, seconds=2, rate=SR):
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        s.layout = "mono"
        data = tone(seconds, rate=rate)[None]
        for i in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i: i + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


# ------------------------------------------------------------------------------------------------ good files


def test_shapes_normalisation_and_audio_placement(clip4):
    raw = decode_raw(clip4, segments=4, size=24)
    assert raw.frames.shape == (4, 24, 24, 3) and raw.frames.dtype == np.uint8
    assert raw.audio.shape == (4, SR) and raw.audio.dtype == np.float32
    assert raw.has_audio and raw.padded_seconds == 0 and raw.warnings == []
    clip = decode_clip(clip4, segments=4, size=24)
    assert clip.frames.shape == (4, 3, 24, 24) and clip.frames.dtype == np.float32
    assert np.array_equal(clip.frames, normalize_frames(raw.frames))
    level = (8 + 3 * 4) / 255.0  # frame 4 is flat grey: every channel is (level - mean) / std
    expected = [(level - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert np.allclose(clip.frames[0].mean(axis=(1, 2)), expected, atol=0.03)
    # audio placed by timestamp: the first two seconds are silent, the tone starts at 2 s
    assert rms(clip.audio[0]) < 0.01 and rms(clip.audio[1]) < 0.01
    assert rms(clip.audio[3]) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    assert int(np.argmax(np.abs(np.fft.rfft(clip.audio[3])))) == 440  # 1-s segment: 1 Hz per bin


def test_sampling_rules_pick_frames_by_time(clip4):
    centre = decode_raw(clip4, segments=4, size=8, sampling="centre")
    assert picked(centre.frames) == [4, 12, 20, 28] and centre.frame_times == [0.5, 1.5, 2.5, 3.5]
    spread = decode_raw(clip4, segments=4, size=8, sampling="linspace")
    # the authors' int(linspace(1, N, T)) over the N = 32 extracted frames, as times
    assert picked(spread.frames) == linspace_indices(32, 4) == [0, 10, 20, 31]
    assert frame_instants(4, "linspace", 8.0)[-1] == pytest.approx(3.875)


def test_window_start_and_probe(clip4):
    win = decode_raw(clip4, segments=2, size=8, start=2.0)
    assert picked(win.frames) == [20, 28] and win.frame_times == [2.5, 3.5] and win.padded_seconds == 0
    assert rms(win.audio[0]) > 0.15  # the tone starts exactly at the window start
    info = probe(clip4)
    assert info.duration == pytest.approx(4.0, abs=0.1)
    assert (info.video.width, info.video.height, info.video.fps, info.video.codec) == (32, 32, 8.0, "h264")
    assert (info.audio.sample_rate, info.audio.channels) == (SR, 1)
    with pytest.raises(MediaError, match="past the end"):
        decode_raw(clip4, segments=2, size=8, start=9.0)


def test_variable_frame_rate_uses_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.9, 1.0, 1.6, 2.4, 2.45, 2.7, 3.5, 3.9]
    path = tmp_path / "vfr.mkv"
    write_video(path, grey_frames(len(times)), fps=8, frame_times=times)
    raw = decode_raw(path, segments=4, size=8)
    # displayed at 0.5, 1.5, 2.5, 3.5 s: the frames shown at 0.15, 1.0, 2.45 and 3.5 s (a frame counter says 4, 12, ...)
    assert picked(raw.frames) == [2, 4, 7, 9]
    assert raw.frame_times == pytest.approx([0.15, 1.0, 2.45, 3.5])


def test_odd_frame_size(tmp_path):
    path = tmp_path / "odd.mp4"
    write_video(path, grey_frames(16, h=55, w=97), fps=8, pix_fmt="yuv444p")
    assert (probe(path).video.width, probe(path).video.height) == (97, 55)
    with pytest.warns(MediaWarning):
        clip = decode_clip(path, segments=2, size=20)
    assert clip.frames.shape == (2, 3, 20, 20) and np.isfinite(clip.frames).all()
    assert picked(decode_raw(path, segments=2, size=20).frames) == [4, 12]
    with pytest.raises(MediaError, match="cannot be encoded"):  # 4:2:0 needs even sizes: a MediaError, not av's
        write_video(tmp_path / "odd420.mp4", grey_frames(2, h=55, w=97), fps=8)


@pytest.mark.parametrize("rotation,corner", [(90, (1, 0)), (-90, (0, 1)), (180, (1, 1)), (0, (0, 0))])
def test_display_rotation_is_applied(tmp_path, rotation, corner):
    # a 64 x 32 landscape picture with a white top-left quadrant; the display matrix turns it counter-clockwise
    img = np.zeros((32, 64, 3), dtype=np.uint8)
    img[:16, :32] = 255
    path = tmp_path / f"rot{rotation}.mp4"
    write_video(path, [img] * 8, fps=8, rotation=rotation if rotation else None)
    with pytest.warns(MediaWarning):  # no audio track
        raw = decode_raw(path, segments=1, size=16)
    assert raw.rotation % 360 == rotation % 360
    quadrants = raw.frames[0].mean(-1).reshape(2, 8, 2, 8).mean(axis=(1, 3))
    assert np.unravel_index(np.argmax(quadrants), (2, 2)) == corner and quadrants.max() > 200


def test_48k_stereo_is_mixed_to_mono_32k(tmp_path):
    left, right = tone(3, 1000, 0.4, rate=48000), tone(3, 1000, 0.2, rate=48000)
    path = tmp_path / "stereo.mkv"
    write_video(path, grey_frames(24), fps=8, audio=np.stack([left, right]), sample_rate=48000)
    info = probe(path)
    assert (info.audio.sample_rate, info.audio.channels) == (48000, 2)
    clip = decode_clip(path, segments=3, size=8)
    assert clip.audio.shape == (3, SR)
    assert rms(clip.audio[1]) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # mean of the two channels
    assert int(np.argmax(np.abs(np.fft.rfft(clip.audio[1])))) == 1000


def test_short_clip_is_padded_and_reported(tmp_path):
    path = tmp_path / "short.mp4"
    write_video(path, grey_frames(24), fps=8, audio=tone(3)[None])
    with pytest.warns(MediaWarning, match="past the end"):
        clip = decode_raw(path, segments=5, size=8)
    assert clip.padded_seconds == pytest.approx(2.0, abs=0.1)
    assert any("past the end" in w for w in clip.warnings)
    assert picked(clip.frames) == [4, 12, 20, 23, 23]  # the last frame repeated
    # zero audio after the end (past the last AAC frame, which pads the stream to 1024 samples)
    assert rms(clip.audio[1]) > 0.15 and not clip.audio[3, 1024:].any() and not clip.audio[4].any()


def test_video_without_audio_gives_silence_or_error_when_strict(tmp_path):
    path = tmp_path / "mute.mp4"
    write_video(path, grey_frames(16), fps=8)
    with pytest.warns(MediaWarning, match="no audio track"):
        clip = decode_clip(path, segments=2, size=8)
    assert not clip.has_audio and clip.audio.shape == (2, SR) and not clip.audio.any()
    assert any("no audio track" in w for w in clip.warnings)
    with pytest.raises(MediaError, match="mute.mp4.*no audio track"):
        decode_clip(path, segments=2, size=8, strict=True)


def test_truncated_matroska_decodes_what_is_left(tmp_path, clip4):
    good = tmp_path / "good.mkv"
    write_video(good, grey_frames(32), fps=8, audio=tone(4)[None])
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.warns(MediaWarning):
        clip = decode_raw(cut, segments=4, size=8)
    assert 0.5 < clip.padded_seconds < 3.5 and clip.frames.shape == (4, 8, 8, 3)


# ------------------------------------------------------------------------------------------------ bad files


def _bad_files(folder: Path, clip4: Path) -> dict:
    """name -> (path, message pattern): every file is something that cannot give model inputs."""
    out = {}
    (folder / "empty.mp4").write_bytes(b"")
    out["zero-byte"] = (folder / "empty.mp4", "empty")
    data = clip4.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # the moov atom is at the end
    out["truncated"] = (folder / "truncated.mp4", "cannot be opened")
    (folder / "notes.mp4").write_text("these are meeting notes, not a video\n" * 20)
    out["text renamed .mp4"] = (folder / "notes.mp4", "cannot be opened")
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(folder / "picture.mp4", format="PNG")
    out["png renamed .mp4"] = (folder / "picture.mp4", "still image")
    with wave.open(str(folder / "speech.mp4"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(16000, dtype=np.int16).tobytes())
    out["wav renamed .mp4"] = (folder / "speech.mp4", "no video track")
    write_audio_only(folder / "audio_only.m4a")
    out["audio-only"] = (folder / "audio_only.m4a", "no video track")
    out["missing"] = (folder / "nope.mp4", "no such file")
    return out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clip4):
    return _bad_files(tmp_path_factory.mktemp("bad"), clip4)


BAD = ["zero-byte", "truncated", "text renamed .mp4", "png renamed .mp4", "wav renamed .mp4", "audio-only", "missing"]


@pytest.mark.parametrize("case", BAD)
def test_bad_file_raises_media_error_naming_it(bad_files, case):
    path, pattern = bad_files[case]
    with pytest.raises(MediaError, match=pattern) as err:
        decode_clip(path, segments=2, size=8)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert err.value.__cause__ is None  # no raw PyAV exception chained


@pytest.mark.parametrize("case", BAD)
def test_bad_file_on_the_cli_is_one_line_and_non_zero(bad_files, case, capsys):
    path, pattern = bad_files[case]
    code = main(["data", "probe", str(path), "--decode", "-T", "2", "--size", "8"])
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caeav: error: ") and str(path) in lines[0]
    assert "Traceback" not in out + err


def test_cli_probe_reports_streams_and_decoded_shapes(clip4, capsys):
    assert main(["data", "probe", str(clip4), "--decode", "-T", "4", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "h264 32x32" in out and "32000 Hz x 1" in out and "frames [4, 3, 16, 16] audio [4, 32000]" in out


# ------------------------------------------------------------------------------------------------ helpers


def test_waveform_segments_and_linspace_indices():
    wave_ = np.arange(2.5 * SR, dtype=np.float32)
    audio, missing = segment_waveform(wave_, 3)
    assert audio.shape == (3, SR) and missing == SR // 2
    assert audio[1, 0] == SR and not audio[2, SR // 2:].any()
    # int(np.linspace(1, N, T)) - 1, as the authors' AVE loader
    assert linspace_indices(80, 10) == [0, 8, 17, 26, 35, 43, 52, 61, 70, 79]
    assert linspace_indices(3, 5) == [0, 0, 1, 1, 2]


def test_media_and_datasets_do_not_import_torch():
    code = ("import sys, caeav.media, caeav.media.write, caeav.data.datasets, caeav.data.synth, caeav.data.check, "
            "caeav.data.cache, caeav.cli.data_cmd; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
