"""`caeav data ...`: check a dataset folder, or write a synthetic one (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Datasets: check what media a dataset folder holds, or write a small synthetic one.",
                  no_args_is_help=True)


@app.command()
def check(
    task: str = typer.Argument(..., help="ave, avvp (llp), avqa, avs_s4 (avs, s4) or avs_ms3 (ms3)"),
    root: Path = typer.Option(..., "--root", "-r", help="dataset folder (see caeav.data.layout for the layout)"),
    split: Optional[List[str]] = typer.Option(None, "--split", "-s", help="train, val or test (repeatable; default all)"),
    media: str = typer.Option("auto", "--media", help="auto, frames (pre-extracted) or video"),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="folder of the annotation files "
                                               "(default: the dataset folder if it has them, else the bundled copy)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="decode a frame and a second of audio of each "
                                "clip (--no-decode: only look for the files)"),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="decoding threads (0: up to 8, one per core)"),
) -> None:
    """How many items of each split have usable media, which are missing, and which cannot be decoded (with why).

    Exit 0: every file present decodes (missing media are listed, not an error: training can skip them).

    Exit 1: some files are present but cannot be decoded (training would stop at the first: fix or remove them).

    Exit 2: no item is usable, or the folder or its annotations cannot be read."""
    from caeav.data.check import check_dataset, format_report

    report = check_dataset(task, root, split or None, media, annotations, decode=decode, workers=workers or None)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if report.unusable:
        typer.echo(f"caeav: {report.unusable} clip(s) have media that cannot be decoded (listed above); fix or "
                   "remove them before training", err=True)
        raise typer.Exit(1)


@app.command()
def synth(
    task: str = typer.Argument(..., help="ave, avvp (llp), avqa, avs_s4 (avs, s4) or avs_ms3 (ms3)"),
    out: Path = typer.Option(..., "--out", "-o", help="new (or empty) folder to write the dataset into"),
    seed: int = typer.Option(0, "--seed", help="the same seed writes the same dataset"),
    clips: int = typer.Option(4, "--clips", "-n", help="clips per split (train, val, test)"),
    media: str = typer.Option("both", "--media", help="video, frames (pre-extracted) or both"),
    classes: int = typer.Option(4, "--classes", help="how many of the task's classes to use"),
    st_dim: int = typer.Option(32, "--st-dim", help="avvp with --media frames: width of the R(2+1)D features "
                               "written to feats/r2plus1d_18/ (tiny: 32; 0 = none)"),
) -> None:
    """Write a small deterministic synthetic dataset in the task's real on-disk format."""
    from caeav.data.synth import synth_dataset
    from caeav.outputs import check_output_dir

    check_output_dir(out, "--out")
    report = synth_dataset(task, out, seed=seed, clips=clips, media=media, num_classes=classes, st_dim=st_dim)
    counts = ", ".join(f"{split} {n}" for split, n in report.items.items())
    feats = " + R(2+1)D features" if (report.root / "feats" / "r2plus1d_18").is_dir() else ""
    typer.echo(f"wrote a synthetic {report.task} dataset to {report.root} ({counts}; media: "
               f"{'+'.join(report.media)}{feats})")


@app.command()
def probe(
    path: Path = typer.Argument(..., help="a video file"),
    decode: bool = typer.Option(False, "--decode", help="also decode one window into model inputs"),
    segments: int = typer.Option(10, "--segments", "-T", help="window length in 1-s segments (with --decode)"),
    size: int = typer.Option(192, "--size", help="frame size in pixels (with --decode)"),
    start: float = typer.Option(0.0, "--start", help="window start in seconds (with --decode)"),
    sampling: str = typer.Option("centre", "--sampling", help="centre or linspace (with --decode)"),
) -> None:
    """Duration and streams of a video file; with --decode, what the model would get from it."""
    from caeav.media import decode_clip, probe as probe_media

    info = probe_media(path)
    video = info.video
    typer.echo(f"{info.path}: {info.duration:.2f} s, {info.format}")
    typer.echo(f"  video: {video.codec} {video.width}x{video.height} @ {video.fps or 0:.3g} fps" if video
               else "  video: none")
    typer.echo(f"  audio: {info.audio.codec} {info.audio.sample_rate} Hz x {info.audio.channels}" if info.audio
               else "  audio: none")
    if decode:
        clip = decode_clip(path, segments, size, start=start, sampling=sampling)
        typer.echo(f"  frames {list(clip.frames.shape)} audio {list(clip.audio.shape)} padded {clip.padded_seconds:g} s "
                   f"rotation {clip.rotation}")
        for note in clip.warnings:
            typer.echo(f"  warning: {note}")
