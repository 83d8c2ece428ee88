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
    ctx: typer.Context,
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
    retries: int = typer.Option(5, "--retries", min=0, help="retries per request on connection errors, 429, 5xx, "
                                "answers that are not JSON or hold no caption"),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="seconds before the first retry (doubles each time)"),
    max_connection_failures: int = typer.Option(5, "--max-connection-failures", min=0,
                                                help="stop the run after this many connection failures in a row "
                                                "(0: never)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CAEAV_API_KEY", help="bearer token, if any"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Ask for the captions the cache lacks (resumable). vLLM: serve Qwen2.5-Omni with
    `--limit-mm-per-prompt '{"image": 10, "audio": 1}'` (T frames per visual request).

    A quick request checks the endpoint first: unreachable, or not an OpenAI-compatible server, is one line (exit 2).

    After --max-connection-failures connection failures in a row the run stops and prints how to resume (exit 2).

    Ctrl-C stops it at once (exit 130). Every caption received is kept in the cache."""
    from caeav.captions.client import ChatClient
    from caeav.captions.generate import generate_captions, open_dataset_cache, resolve_model
    from caeav.captions.prompts import Decoding
    from caeav.captions.sources import dataset_jobs
    from caeav.data.layout import canonical
    from caeav.errors import CaptionError

    task = canonical(task)
    client = ChatClient(endpoint, timeout=timeout, retries=retries, backoff=backoff, api_key=api_key)
    model = resolve_model(client, model)  # the pre-flight request: before any work, before the cache is created
    jobs, notes = dataset_jobs(task, root, split or None, frame_size, media, annotations)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    decoding = Decoding(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    step = max(1, len(jobs) // 20)

    def progress(done: int, total: int, clip_id: str, failed: list) -> None:
        if not quiet and (done % step == 0 or done == total or failed):
            state = f"failed ({failed[0].message})" if failed else "ok"
            typer.echo(f"[{done}/{total}] {clip_id}: {state}", err=True)

    cache_path = cache or default_cache(root, task)
    with open_dataset_cache(cache_path, task) as store:
        report = generate_captions(jobs, store, client, model, decoding, concurrency, frame_size=frame_size,
                                   progress=progress, max_connection_failures=max_connection_failures,
                                   preflight=False)
    typer.echo(report.summary())
    if report.stopped:
        raise CaptionError(f"stopped: {report.stopped}; {report.generated} new caption(s) kept in {cache_path} "
                           f"({report.cached + report.generated} of {2 * report.clips}); resume with: "
                           f"{resume_command(ctx)}")
    if not report.ok:
        raise CaptionError(f"{len(report.failures)} caption(s) failed; rerun to retry them: {resume_command(ctx)}")


def resume_command(ctx: typer.Context) -> str:
    """The command line that reruns this command: the options given on the command line, the API key not shown."""
    import shlex

    names, node = [], ctx
    while node.parent is not None:  # the root's name is how Python was started; the user typed `caeav`
        names.insert(0, node.info_name)
        node = node.parent
    words = ["caeav", *names]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if getattr(source, "name", "") != "COMMANDLINE" or not param.opts:
            continue
        value = ctx.params.get(param.name)
        flag = max(param.opts, key=len)
        if param.name == "api_key":
            words += [flag, "KEY"]
        elif getattr(param, "is_flag", False):
            words += [flag] if value else []
        else:
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                words += [flag, os.fspath(item) if isinstance(item, Path) else str(item)]
    return shlex.join(words)


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
