"""Synthetic captions (`caeav.data.synth_captions`): one visual and one audio caption per clip under the dataset's own
clip id, describing what is seen and heard (so the misaligned clips differ between the two), and the training line
that says how many clips the caption cache knows."""

from __future__ import annotations

import json

import pytest

from caeav.data.datasets import build_dataset
from caeav.data.synth import synth_dataset
from caeav.data.synth_captions import audio_caption, visual_caption
from caeav.data.synth_scene import Source
from caeav.train.batches import caption_coverage_note


@pytest.mark.parametrize("task", ["ave", "avvp"])
def test_captions_are_keyed_by_the_datasets_clip_ids(task, tmp_path):
    root = tmp_path / task
    synth_dataset(task, root, seed=0, clips=3, media="frames", st_dim=8)
    lines = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    ids = {(line["clip_id"], line["modality"]) for line in lines}
    assert len(ids) == len(lines)  # one caption per clip and modality
    for split in ("train", "val", "test"):
        dataset = build_dataset(task, root, split, size=32, **({"st_dim": 8} if task == "avvp" else {}))
        for record in dataset.records:
            clip = dataset.clip_id(record)  # LLP: the file name <id>_<start>_<end>; AVE: the video id
            assert (clip, "visual") in ids and (clip, "audio") in ids


def test_captions_describe_what_is_seen_and_heard():
    offscreen = [Source(4, visible=[], audible=[(0, 10)])]
    silent = [Source(1, visible=[(2, 8)], audible=[])]
    assert visual_caption(offscreen, 10) == "An empty grey frame; nothing moves."
    assert "throughout" in audio_caption(offscreen, 10) and "tone" in audio_caption(offscreen, 10)
    assert audio_caption(silent, 10) == "Silence."
    assert "from 2 s to 8 s" in visual_caption(silent, 10)
    assert "noise" in audio_caption([Source(2, audible=[(0, 3)])], 10)  # every third class is a noise band


class FakeCache:
    def __init__(self, known):
        self.known = set(known)

    def resolve(self, key):
        return key if key in self.known else None


class FakeSplit:
    split = "train"
    records = ["a", "b", "c", "b"]

    def clip_id(self, record):
        return record


def test_coverage_note_counts_clips_and_names_a_missing_id():
    assert caption_coverage_note(FakeCache("abc"), FakeSplit()) == "captions: 3 of 3 train clips are in the cache"
    note = caption_coverage_note(FakeCache("a"), FakeSplit())
    assert note.startswith("captions: 1 of 3 train clips") and "'b'" in note
    assert caption_coverage_note(object(), FakeSplit()) is None  # no cache: nothing to say
