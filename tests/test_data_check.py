"""`caeav data check` decodes what it counts: zero-byte, random-bytes and truncated media are listed as unusable (one
line each, with the reason) and the command exits 1; missing media stay a listed, non-fatal finding (issue 15, item 7)."""

import os
import shutil

import numpy as np
import pytest

from caeav.cli.main import main
from caeav.data.annotations import load_ave
from caeav.data.check import check_dataset
from caeav.data.layout import forget_listings
from caeav.data.synth import synth_dataset
from caeav.errors import DataError

CLIPS = 3  # per split


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return synth_dataset("ave", tmp_path_factory.mktemp("check") / "ave", seed=5, clips=CLIPS, media="both").root


@pytest.fixture
def ave(pristine, tmp_path):
    root = tmp_path / "ave"
    shutil.copytree(pristine, root)
    forget_listings()
    yield root
    forget_listings()


def _ids(root, split):
    return [r.video_id for r in load_ave(root).split(split)]


def _splits(report):
    return {s.split: s for s in report.splits}


def test_a_clean_dataset_decodes_and_exits_zero(ave, capsys):
    report = check_dataset("ave", ave, media="video")
    assert report.unusable == 0 and report.usable == 3 * CLIPS and report.decoded
    assert main(["data", "check", "ave", "--root", str(ave)]) == 0
    out = capsys.readouterr().out
    assert "unusable" in out.splitlines()[1] and " unusable " not in out  # the column header, no finding


def test_zero_byte_and_random_bytes_videos_are_unusable(ave, capsys):
    val, test = _ids(ave, "val"), _ids(ave, "test")
    (ave / "videos" / f"{val[0]}.mp4").write_bytes(b"")
    (ave / "videos" / f"{test[1]}.mp4").write_bytes(np.random.default_rng(0).bytes(40_000))
    with open(ave / "videos" / f"{test[2]}.mp4", "r+b") as f:  # a truncated file: the header survives, no packet
        f.truncate(os.path.getsize(f.name) // 50)
    splits = _splits(check_dataset("ave", ave, media="video"))
    assert splits["val"].usable == CLIPS - 1 and splits["test"].usable == CLIPS - 2
    assert splits["val"].forms["video"] == CLIPS - 1
    reasons = dict(splits["val"].unusable + splits["test"].unusable)
    assert set(reasons) == {val[0], test[1], test[2]}
    assert "is empty (0 bytes)" in reasons[val[0]]
    assert "cannot be opened" in reasons[test[1]] or "cannot be decoded" in reasons[test[1]]
    assert reasons[test[2]]

    assert main(["data", "check", "ave", "--root", str(ave), "--media", "video"]) == 1
    out, err = capsys.readouterr()
    listed = [line.strip() for line in out.splitlines() if line.strip().startswith("unusable ")]
    assert len(listed) == 3 and any(val[0] in line and "0 bytes" in line for line in listed)
    assert err.strip().splitlines() == ["caeav: 3 clip(s) have media that cannot be decoded (listed above); fix or "
                                        "remove them before training"]
    assert main(["data", "check", "ave", "--root", str(ave), "--media", "video", "--no-decode"]) == 0  # files only
    assert "files not decoded" in capsys.readouterr().out


def test_damaged_pre_extracted_frames_and_waveforms_are_unusable(ave, capsys):
    train = _ids(ave, "train")
    frames = sorted((ave / "frames" / train[0]).iterdir())
    frames[0].write_bytes(np.random.default_rng(1).bytes(3000))  # the first frame: decoded
    last = sorted((ave / "frames" / train[1]).iterdir())[-1]  # picked by int(linspace(1, N, 10)): header checked
    last.write_bytes(b"")
    (ave / "wave" / f"{train[2]}.npy").write_bytes(b"\x93NUMPY garbage")
    splits = _splits(check_dataset("ave", ave))  # auto: the pre-extracted form is what training would read
    reasons = dict(splits["train"].unusable)
    assert set(reasons) == {train[0], train[1], train[2]} and splits["train"].usable == 0
    assert "cannot be read as an image" in reasons[train[0]]
    assert str(last) in reasons[train[1]] and "0 bytes" in reasons[train[1]]
    assert "waveform" in reasons[train[2]]
    assert splits["val"].usable == CLIPS  # the other splits are untouched
    assert _splits(check_dataset("ave", ave, media="video"))["train"].unusable == []  # their videos are fine

    np.save(ave / "wave" / f"{train[2]}.npy", np.full(32000 * 10, np.nan, np.float32))
    assert "NaN" in dict(_splits(check_dataset("ave", ave))["train"].unusable)[train[2]]
    assert main(["data", "check", "ave", "--root", str(ave), "--json"]) == 1
    assert '"unusable": 3' in capsys.readouterr().out
    assert main(["data", "check", "ave", "--root", str(ave), "--split", "train"]) == 2  # nothing usable: one line
    assert capsys.readouterr().err.count("\n") == 1


def test_nothing_decodable_is_one_line_naming_a_reason(ave, capsys):
    for path in (ave / "videos").iterdir():
        path.write_bytes(b"")
    shutil.rmtree(ave / "frames")
    with pytest.raises(DataError, match=r"none of the 9 items .* \(9 clip\(s\) cannot be decoded, e\.g\. .*0 bytes"):
        check_dataset("ave", ave)
    assert main(["data", "check", "ave", "--root", str(ave)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("caeav: error: no usable media")
