"""`caeav captions ...`: generate MLLM captions, encode them with CLIP, inspect / import / export the caption cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="MLLM captions (Qwen2.5-Omni through an OpenAI-compatible endpoint) and their CLIP features.",
                  no_args_is_help=True)

CACHE_HELP = "caption cache file (SQLite)"


def default_cache(root: Path, task: str) -> Path:
    return Path(root) / "captions" / f"{task}.sqlite"


@app.command()
def generate(
    task: str = typer.Option(..., "--task", "-t", help="ave, avvp, avqa, avs_s4 (avs), avs_ms3"),
    root: Path = typer.Option(..., "--root", help="dataset folder (layout: `caeav data check`)"),
    endpoint: str = typer.Option(..., "--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1"),
    model: Optional[str] = typer.Option(None, "--model", help="served model name (default: the only one served)"),
    cache: Optional[Path] = typer.Option(None, "--cache", help=f"{CACHE_HELP} [default: ROOT/captions/TASK.sqlite]"),
    concurrency: int = typer.Option(4, "--concurrency", "-j", min=1, help="clips in flight at once"),
    split: Optional[List[str]] = typer.Option(None, "--split", help="train, val, test (repeatable; default: all)"),
    media: str = typer.Option("auto", "--media", help="auto, frames (pre-extracted) or video"),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="annotation folder (default: ROOT or bundled)"),
    frame_size: int = typer.Option(448, "--frame-size", min=28, help="side of the square frames sent, px"),
    temperature: float = typer.Option(0.0, "--temperature", help="decoding temperature (both modalities)"),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_tokens: int = typer.Option(96, "--max-tokens", min=1),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds per request"),
    retries: int = typer.Option(5, "--retries", min=0, help="retries per request on connection errors, 429, 5xx"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CAEAV_API_KEY", help="bearer token, if any"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Ask for the captions the cache lacks (resumable). vLLM: serve Qwen2.5-Omni with
    `--limit-mm-per-prompt '{"image": 10, "audio": 1}'` (T frames per visual request)."""
    from caeav.captions.client import ChatClient
    from caeav.captions.generate import generate_captions, open_dataset_cache
    from caeav.captions.prompts import Decoding
    from caeav.captions.sources import dataset_jobs
    from caeav.data.layout import canonical
    from caeav.errors import CaptionError

    task = canonical(task)
    jobs, notes = dataset_jobs(task, root, split or None, frame_size, media, annotations)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    client = ChatClient(endpoint, timeout=timeout, retries=retries, api_key=api_key)
    decoding = Decoding(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    step = max(1, len(jobs) // 20)

    def progress(done: int, total: int, clip_id: str, failed: list) -> None:
        if not quiet and (done % step == 0 or done == total or failed):
            state = f"failed ({failed[0].message})" if failed else "ok"
            typer.echo(f"[{done}/{total}] {clip_id}: {state}", err=True)

    with open_dataset_cache(cache or default_cache(root, task), task) as store:
        report = generate_captions(jobs, store, client, model, decoding, concurrency, frame_size=frame_size,
                                   progress=progress)
    typer.echo(report.summary())
    if not report.ok:
        raise CaptionError(f"{len(report.failures)} caption(s) failed"
                           + (f"; {report.stopped}" if report.stopped else "") + "; rerun to retry them")


@app.command()
def encode(
    cache: Path = typer.Option(..., "--cache", help=CACHE_HELP),
    config: str = typer.Option("paper", "--config", "-c", help="preset whose caption tower to use: tiny, base, paper"),
    device: str = typer.Option("cpu", "--device"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    model: Optional[str] = typer.Option(None, "--model", help="use only captions of this model"),
    prompt_version: Optional[str] = typer.Option(None, "--prompt-version", help="use only this prompt version"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value config overrides, e.g. caption.weights=PATH"),
) -> None:
    """CLIP text features [77, D] float16 for every caption whose features are missing or stale."""
    from caeav.captions.cache import CaptionCache
    from caeav.captions.encode import encode_cache
    from caeav.config import load_config

    cfg = load_config(config, "ave", overrides or [])
    _must_exist(cache)
    with CaptionCache(cache) as store:
        report = encode_cache(store, cfg.caption, device, batch_size, model, prompt_version)
    typer.echo(report.summary())


@app.command()
def show(
    clip: str = typer.Argument(..., help="clip id, or the sha256 of its video file"),
    cache: Path = typer.Option(..., "--cache", help=CACHE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Print the visual and audio captions of a clip (every model / prompt version; newest first)."""
    from caeav.captions.cache import CaptionCache
    from caeav.errors import CaptionError

    _must_exist(cache)
    with CaptionCache(cache, readonly=True) as store:
        clip_id = store.resolve(clip)
        if clip_id is None:
            raise CaptionError(f"{cache} knows no clip {clip!r}")
        found = store.captions(clip_id)
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in found], indent=2, ensure_ascii=False))
        return
    typer.echo(f"clip {clip_id}")
    for modality in ("visual", "audio"):
        mine = [c for c in found if c.modality == modality]
        if not mine:
            typer.echo(f"  {modality}: (no caption: the empty-caption features are used)")
        for c in mine:
            typer.echo(f"  {modality} [{c.model}, {c.prompt_version}, {c.source}]: {c.text}")


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="JSONL file: one {clip_id, modality, text, ...} object per line"),
    cache: Path = typer.Option(..., "--cache", help=CACHE_HELP),
    model: str = typer.Option("external", "--model", help="model name for lines that give none"),
    prompt_version: str = typer.Option("external", "--prompt-version", help="prompt version for lines without one"),
) -> None:
    """Add or replace captions from a JSONL file (all lines or none)."""
    from caeav.captions.cache import CaptionCache
    from caeav.captions.jsonl import import_jsonl

    with CaptionCache(cache) as store:
        count = import_jsonl(store, path, model, prompt_version)
    typer.echo(f"imported {count} caption(s) into {cache}")


@app.command()
def export(
    path: Path = typer.Argument(..., help="JSONL file to write"),
    cache: Path = typer.Option(..., "--cache", help=CACHE_HELP),
    modality: Optional[str] = typer.Option(None, "--modality", help="visual or audio (default: both)"),
    model: Optional[str] = typer.Option(None, "--model"),
    prompt_version: Optional[str] = typer.Option(None, "--prompt-version"),
) -> None:
    """Write captions (with their metadata) as JSONL, one caption per line."""
    from caeav.captions.cache import CaptionCache
    from caeav.captions.jsonl import export_jsonl

    _must_exist(cache)
    with CaptionCache(cache, readonly=True) as store:
        count = export_jsonl(store, path, modality, model, prompt_version)
    typer.echo(f"exported {count} caption(s) to {path}")


def _must_exist(cache: Path) -> None:
    from caeav.errors import CaptionError

    if not os.path.isfile(cache):
        raise CaptionError(f"caption cache not found: {cache}")
