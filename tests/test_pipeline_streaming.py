"""`caeav infer` streams the windows (issue 17, memory that does not grow with the video): the results equal those
of decoding every window first and running them in batches (and, up to float rounding, in one batch), and the
pipeline never holds more than a bounded number of decoded windows, however long the video. The bundled default
model (tiny, onnxruntime) on synthetic clips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caeav.runtime.bench import synthetic_clip
from caeav.runtime.bundle import DEFAULT_BUNDLE
from caeav.runtime.decoding import WindowStream, decode_windows
from caeav.runtime.pipeline import InferOptions, Pipeline
from caeav.runtime.results import video_json


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    out = {}
    for seconds in (35, 12, 120):
        folder = root / str(seconds)
        folder.mkdir()
        out[seconds] = synthetic_clip(folder, seconds)
    return out


def _reference(pipe: Pipeline, paths: list, chunk: int) -> list:
    """Every video decoded whole (`Pipeline.decode`), its windows run `chunk` at a time in the run's order."""
    videos = [pipe.decode(i, str(p)) for i, p in enumerate(paths)]
    windows = [(d, w) for d in videos for w in range(len(d.starts))]
    for s in range(0, len(windows), chunk):
        part = windows[s:s + chunk]
        outs = pipe.model.run(np.stack([d.frames[w] for d, w in part]), np.stack([d.wave[w] for d, w in part]),
                              np.stack([d.vis_caption for d, _ in part]), np.stack([d.aud_caption for d, _ in part]))
        for (d, w), out in zip(part, pipe.model.items(outs, len(part))):
            d.outputs[w][0] = out
    return [(d, pipe.adapter.finish(pipe.bundle, d, d.outputs)) for d in videos]


def _json(pipe, result) -> dict:
    return video_json(result, pipe.adapter)


def test_streamed_results_equal_decoding_everything_first(clips, tmp_path):
    pipe = Pipeline(DEFAULT_BUNDLE, InferOptions(engine="ort", batch=3, threads=1))
    paths = [clips[35], tmp_path / "missing.mp4", clips[12]]
    report = pipe.run(paths)
    assert [f.index for f in report.failures] == [1]
    assert [len(r.windows) for r in report.results] == [4, 2]  # 0, 10, 20, 25 and 0, 2: batches cross videos
    reference = _reference(pipe, [paths[0], paths[2]], pipe.batch)
    for result, (d, timeline) in zip(report.results, reference):
        assert (result.duration, result.seconds, result.warnings) == (d.duration, d.seconds, d.warnings)
        assert [w["start"] for w in result.windows] == d.starts
        assert _json(pipe, result)["per_second"] == [dict(s) for s in timeline["per_second"]]
        assert result.timeline["events"] == timeline["events"]
        for key, value in timeline["arrays"].items():
            np.testing.assert_array_equal(result.timeline["arrays"][key], value)  # bit-identical
    one = _reference(pipe, [paths[0]], 4)[0][1]  # the 35-s clip's four windows in one engine call
    got = report.results[0].timeline
    assert [s["label"] for s in got["per_second"]] == [s["label"] for s in one["per_second"]]
    np.testing.assert_allclose(got["arrays"]["confidence"], one["arrays"]["confidence"], atol=1e-5)


def test_decoded_windows_stay_bounded_on_a_long_video(clips):
    pipe = Pipeline(DEFAULT_BUNDLE, InferOptions(engine="ort", batch=2, workers=1, threads=1))
    report = pipe.run([clips[120]])
    (result,) = report.results
    assert len(result.windows) == 12 and result.seconds == 120
    T = pipe.bundle.segments
    bound = max(2, pipe.batch) + 1 + math.ceil(T / T) + pipe.batch  # queue + producer + WindowStream + batch
    assert 1 <= pipe.peak_windows <= bound < len(result.windows)


@pytest.mark.parametrize("stride", [None, 4])
def test_window_stream_hands_out_the_final_plan(clips, stride):
    """`WindowStream` (the streamed order) and `decode_windows` (the whole video) agree, with overlapping windows
    too, and every window handed out is in the final plan."""
    pipe = Pipeline(DEFAULT_BUNDLE, InferOptions(engine="ort", window_stride=stride))
    stream = WindowStream(pipe.bundle, pipe.options, str(clips[35]), 35.0)
    got = [(start, clip.frames) for start, clip in stream]
    starts, seconds, whole, duration, truncated = decode_windows(pipe.bundle, pipe.options, str(clips[35]), 35.0)
    assert [s for s, _ in got] == stream.starts == starts and stream.seconds == seconds == 35
    assert not truncated and not stream.truncated
    for (_, frames), clip in zip(got, whole):
        np.testing.assert_array_equal(frames, clip.frames)
