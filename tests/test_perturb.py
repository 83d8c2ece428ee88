"""Issue 14: `caeav eval --perturb` changes the inputs exactly as documented (`caeav.train.perturb`), deterministically,
leaves the targets alone, and its clean row is plain `caeav eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caeav.cli.main import main
from caeav.errors import CaeavError
from caeav.train.perturb import (PerturbedDataset, Perturbation, add_noise, derangement, parse_perturbations,
                                 shift_audio)

RATE = 32000


class FakeDataset:
    """Items with recognisable inputs: audio = a ramp + 10 × the first item index of the item's clip, frames all
    i + 1; AVQA-like clip ids (several items per clip)."""

    def __init__(self, clip_ids, T: int = 4):
        self.records = list(clip_ids)
        self.T = T

    def __len__(self):
        return len(self.records)

    def clip_id(self, record):
        return record

    def __getitem__(self, i):
        ramp = np.arange(self.T * RATE, dtype=np.float32).reshape(self.T, RATE) / RATE
        return {"clip_id": self.records[i], "audio": ramp + 10 * self.records.index(self.records[i]),
                "frames": np.full((self.T, 3, 2, 2), i + 1.0, np.float32), "labels": np.array([i]),
                "caption_visual": np.ones((3, 2), np.float32), "caption_audio": np.ones((3, 2), np.float32),
                "caption_fallback": np.array([False, False])}


def test_offset_moves_the_waveform_by_exactly_k_seconds_circularly():
    data = FakeDataset(["a", "b"])
    clean = data[0]["audio"]
    shifted = PerturbedDataset(data, Perturbation("offset", 2.0))[0]["audio"]
    assert shifted.shape == clean.shape and shifted.dtype == clean.dtype
    flat_c, flat_s = clean.reshape(-1), shifted.reshape(-1)
    assert np.array_equal(flat_s[2 * RATE:], flat_c[:-2 * RATE])  # later by 2 × 32000 samples
    assert np.array_equal(flat_s[:2 * RATE], flat_c[-2 * RATE:])  # what left the end is at the start
    assert np.array_equal(shift_audio(clean, -1.0, RATE).reshape(-1), np.roll(flat_c, -RATE))


def test_swap_audio_is_a_seeded_derangement_of_clips():
    for n in (2, 3, 7, 50):
        for seed in range(5):
            p = derangement(n, seed)
            assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
    assert np.array_equal(derangement(20, 3), derangement(20, 3))
    assert not np.array_equal(derangement(20, 3), derangement(20, 4))
    with pytest.raises(CaeavError):
        derangement(1, 0)
    ids = ["v0", "v0", "v1", "v2", "v2", "v3"]  # AVQA: several questions per video
    data = FakeDataset(ids)
    swapped = PerturbedDataset(data, Perturbation("swap-audio"), seed=1)
    donors = {}
    for i, clip in enumerate(ids):
        item = swapped[i]
        donor = ids[int(round(float(item["audio"][0, 0]) / 10))]  # audio: 10 × its clip's first item index
        assert donor != clip, "a clip kept its own audio"
        donors.setdefault(clip, set()).add(donor)
        assert np.array_equal(item["frames"], data[i]["frames"]) and item["labels"] == data[i]["labels"]
    assert all(len(d) == 1 for d in donors.values())  # every question of a video hears the same other video
    again = PerturbedDataset(data, Perturbation("swap-audio"), seed=1)
    assert all(np.array_equal(again[i]["audio"], swapped[i]["audio"]) for i in range(len(ids)))


def test_mute_blank_noise_and_drop_captions():
    data = FakeDataset(["a", "b", "c"])
    muted = PerturbedDataset(data, Perturbation("mute-audio"))[1]
    assert not muted["audio"].any() and np.array_equal(muted["frames"], data[1]["frames"])
    blank = PerturbedDataset(data, Perturbation("blank-frames"))[1]
    assert not blank["frames"].any() and np.array_equal(blank["audio"], data[1]["audio"])
    noisy = PerturbedDataset(data, Perturbation("noise-audio", 10.0), seed=2)
    a, b = noisy[1]["audio"], noisy[1]["audio"]
    assert np.array_equal(a, b)  # seeded per clip: the same every time
    clean = data[1]["audio"]
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((a - clean).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.1
    silent = np.zeros((2, 100), np.float32)
    assert not add_noise(silent, 0.0, np.random.default_rng(0)).any()
    empty = np.full((3, 2), -1.0, np.float32)
    dropped = PerturbedDataset(data, Perturbation("drop-captions"), empty_caption=empty)[0]
    assert np.array_equal(dropped["caption_visual"], empty) and np.array_equal(dropped["caption_audio"], empty)
    assert dropped["caption_fallback"].all() and np.array_equal(dropped["audio"], data[0]["audio"])


def test_parse_perturbations_and_its_one_line_errors():
    got = parse_perturbations("swap-audio, offset:2,noise-audio:-5,mute-audio,blank-frames,drop-captions")
    assert [p.label for p in got] == ["swap-audio", "offset:2", "noise-audio:-5", "mute-audio", "blank-frames",
                                      "drop-captions"]
    for bad, says in (("reverse-audio", "unknown"), ("offset", "needs a number"), ("offset:x", "needs a number"),
                      ("mute-audio:3", "takes no value"), ("offset:1,offset:1", "twice"), ("", "no perturbation"),
                      ("offset:inf", "finite")):
        with pytest.raises(CaeavError, match=says):
            parse_perturbations(bad)


@pytest.fixture(scope="module")
def synthetic_ave(tmp_path_factory):
    from caeav.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("ave")
    synth_dataset("ave", root, seed=0, clips=8, media="frames")
    return root


def test_clean_row_is_plain_eval_on_the_bundled_checkpoint(synthetic_ave, capsys):
    """The issue's command on the bundled default's checkpoint: the clean row equals `caeav eval`, exactly."""
    from caeav.runtime.bundle import DEFAULT_BUNDLE

    ckpt = str(DEFAULT_BUNDLE / "checkpoint")
    base = ["eval", "ave", "--checkpoint", ckpt, "--data-root", str(synthetic_ave), "--json"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(base + ["--perturb", "swap-audio,offset:2,mute-audio,blank-frames,drop-captions"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clean"] == plain
    assert list(report["perturbed"]) == ["swap-audio", "offset:2", "mute-audio", "blank-frames", "drop-captions"]
    for row in report["perturbed"].values():
        assert row["delta"] == pytest.approx(row["score"] - plain["score"])
    # without --captions every clip already has the empty-caption features: dropping them changes nothing
    assert report["perturbed"]["drop-captions"]["score"] == plain["score"]
    # the model learnt the synthetic task from both modalities: losing the frames costs accuracy
    assert report["perturbed"]["blank-frames"]["score"] < plain["score"]
    assert main(base + ["--perturb", "offset:two"]) == 2
    assert "needs a number" in capsys.readouterr().err
