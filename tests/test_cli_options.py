"""Comma-list options (`caeav bench --engines/--precisions/--batch`, `caeav export --precision`): one parser, one line
naming the option for a bad value, exit code 2, before any work starts."""

import pytest

from caeav.cli.main import main
from caeav.cli.options import comma_list
from caeav.errors import CaeavError


def test_comma_list_parses_and_names_the_option():
    assert comma_list(" fp16, int8 ,", "--precision", ("fp32", "fp16", "int8")) == ["fp16", "int8"]
    assert comma_list("1,2", "--batch") == ["1", "2"]
    for bad in ("", " , ", "fp8", "fp16,fp8"):
        with pytest.raises(CaeavError, match="--precision: expected a comma-separated list of fp32, fp16, int8"):
            comma_list(bad, "--precision", ("fp32", "fp16", "int8"))


@pytest.mark.parametrize("argv, option", [
    (["bench", "nowhere", "--engines", "cuda"], "--engines"),
    (["bench", "nowhere", "--precisions", "fp8"], "--precisions"),
    (["export", "--out", "nowhere", "--config", "tiny", "--random-weights", "--precision", "fp8"], "--precision"),
])
def test_bad_comma_lists_exit_2_with_one_line(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option}: expected a comma-separated list" in err[0]
    assert list(tmp_path.iterdir()) == []
