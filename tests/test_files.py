"""caeav.files: atomic files (binary and text) and staged directories leave the old content whole on failure."""

from __future__ import annotations

import csv

import pytest

from caeav.files import atomic_file, staged_dir, write_json_atomic


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "metrics.csv"
    with atomic_file(path, text=True) as fh:
        csv.writer(fh).writerows([["epoch", "loss"], [1, 0.5]])
    assert path.read_bytes() == b"epoch,loss\r\n1,0.5\r\n"  # csv's own line ends, untranslated
    with pytest.raises(RuntimeError):
        with atomic_file(path) as fh:
            fh.write(b"partial")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"epoch,loss\r\n1,0.5\r\n" and [p.name for p in path.parent.iterdir()] == [path.name]
    write_json_atomic(path.with_suffix(".json"), {"a": 1})
    assert path.with_suffix(".json").read_text() == '{\n  "a": 1\n}\n'


def test_staged_dir_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "ckpt"
    with staged_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("ckpt.tmp-")
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with staged_dir(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
