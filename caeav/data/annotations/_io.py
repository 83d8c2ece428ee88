"""Where the annotation files live and how their text is read; every failure is one `DataError` line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional, Union

from caeav.errors import DataError

PathLike = Union[str, Path]

# task or dataset name -> folder under caeav/assets/annotations/
_BUNDLED = {
    "ave": "ave", "avvp": "llp", "llp": "llp", "avqa": "music-avqa", "music-avqa": "music-avqa", "musicavqa": "music-avqa"
}
_NOT_BUNDLED = {"avs", "avs_s4", "avs_ms3", "s4", "ms3", "avsbench"}


def default_annotation_root(task: str) -> Path:
    """The bundled annotation folder of a task (`ave`, `avvp`/`llp`, `avqa`/`music-avqa`) inside the installed package.

    AVSBench meta CSVs are not bundled: AVS tasks raise DataError asking for the CSV path.
    """
    key = task.lower()
    if key in _NOT_BUNDLED:
        raise DataError(f"AVSBench annotations are not bundled ({task}): pass the path of s4_meta_data.csv or ms3_meta_data.csv")
    if key not in _BUNDLED:
        raise DataError(f"no bundled annotations for task {task!r}; known: {', '.join(sorted(_BUNDLED))}")
    folder = resources.files("caeav").joinpath("assets", "annotations", _BUNDLED[key])
    if not isinstance(folder, Path) or not folder.is_dir():
        raise DataError(f"bundled annotations for {task} are missing from the installed package ({folder})")
    return folder


def resolve_root(root: Optional[PathLike], task: str) -> Path:
    """`root` as a Path (it must be a folder), or the bundled folder of `task` when `root` is None."""
    if root is None:
        return default_annotation_root(task)
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"annotation folder not found: {path}")
    return path


def read_text(path: Path) -> str:
    """A whole text file (UTF-8, a leading BOM dropped, CRLF turned into LF), or DataError."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    return text.replace("\r\n", "\n")


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines as (1-based line number, text without the newline)."""
    return [(n, line) for n, line in enumerate(read_text(path).split("\n"), start=1) if line.strip()]


def read_table(path: Path, sep: str, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """A separated table whose first line must be exactly `header`; rows as (line number, fields), field count checked."""
    lines = read_lines(path)
    if not lines:
        raise DataError(f"{path}: empty file")
    head = lines[0][1].split(sep)
    if tuple(h.strip() for h in head) != header:
        raise DataError(f"{path}: expected header {sep.join(header)!r}, found {lines[0][1]!r}")
    rows = []
    for n, line in lines[1:]:
        fields = line.split(sep)
        if len(fields) != len(header):
            raise DataError(f"{path}: line {n}: expected {len(header)} fields separated by {sep!r}, got {len(fields)}")
        rows.append((n, fields))
    return rows


def parse_int(text: str, path: Path, line: int, what: str) -> int:
    """An integer field (`"4"`, or a whole-valued `"4.0"`), or DataError naming file, line and field."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: line {line}: {what} {text!r} is not a number") from None
    if not value.is_integer():
        raise DataError(f"{path}: line {line}: {what} {text!r} is not a whole number of seconds")
    return int(value)
