"""`caeav infer`: parse arguments and call `caeav.runtime` (torch-free unless --engine torch)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from caeav.errors import CaeavError
from caeav.runtime.bundle import DEFAULT_BUNDLE, DEFAULT_SAMPLE


class BatchFailed(CaeavError):
    """Some videos of a batch run failed (already listed in the report)."""

    exit_code = 1


def default_inputs(videos: Optional[List[Path]], bundle: Optional[Path]) -> tuple[list, Path]:
    """The bundled default model and sample clip fill in what the user left out."""
    if bundle is None:
        if not (DEFAULT_BUNDLE / "manifest.json").is_file():
            raise CaeavError(f"no --bundle given and this install has no bundled default model ({DEFAULT_BUNDLE}); "
                             "pass --bundle DIR (made by `caeav export`)")
        bundle = DEFAULT_BUNDLE
    if not videos:
        if not DEFAULT_SAMPLE.is_file():
            raise CaeavError(f"no video given and this install has no bundled sample clip ({DEFAULT_SAMPLE}); "
                             "pass VIDEO... (files, folders or .txt lists)")
        videos = [DEFAULT_SAMPLE]
    return list(videos), bundle


def check_outputs(json_out, plot, masks, overlay) -> None:
    """Every output path is writable before any work starts (`caeav.outputs`): one line naming the option."""
    from caeav.outputs import check_output_dir, check_output_file

    check_output_file(json_out, "--json")
    check_output_file(plot, "--plot")
    check_output_dir(masks, "--masks")
    check_output_file(overlay, "--overlay")
    if overlay is not None:
        from caeav.runtime.tasks.avs_files import OVERLAY_SUFFIXES

        if Path(overlay).suffix.lower() not in OVERLAY_SUFFIXES:
            raise CaeavError(f"--overlay {overlay}: give a video file name ending in "
                             f"{', '.join(OVERLAY_SUFFIXES)}")


def infer(
    videos: Optional[List[Path]] = typer.Argument(None, help="video files, folders or .txt lists (default: the "
                                                  "bundled sample clip)"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="export bundle (default: the bundled model)"),
    engine: str = typer.Option("auto", "--engine", "-e", help="auto, trt, ort or torch"),
    precision: str = typer.Option("fp32", "--precision", "-p", help="fp32, fp16, int8 or int8cpu (as the bundle has them)"),
    captions: Optional[str] = typer.Option(None, "--captions", help="caption cache file, or 'none' (default: none, "
                                           "the empty-caption features); with --caption-endpoint, new captions "
                                           "are stored there (created if missing)"),
    caption_endpoint: Optional[str] = typer.Option(None, "--caption-endpoint", help="OpenAI-compatible URL (e.g. "
                                                   "vLLM serving Qwen2.5-Omni, http://host:8000/v1) asked for the "
                                                   "captions of clips the cache lacks"),
    caption_model: Optional[str] = typer.Option(None, "--caption-model", help="served model for "
                                                "--caption-endpoint (default: the only one served)"),
    task: Optional[str] = typer.Option(None, "--task", help="fail unless the bundle is for this task (ave, avvp, "
                                       "avs_s4, avs_ms3, avqa)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON (schema caeav.infer/2; "
                                            "OUT.partial.jsonl beside it while it runs)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a figure PNG: sampled frames, spectrogram, "
                                        "results"),
    masks: Optional[Path] = typer.Option(None, "--masks", help="AVS: folder for one binary PNG per sampled frame"),
    overlay: Optional[Path] = typer.Option(None, "--overlay", help="AVS: write the clip with the masks tinted "
                                           "(OUT.mp4; OUT_<clip>.mp4 for several clips)"),
    question: Optional[List[str]] = typer.Option(None, "--question", help="AVQA: a question to ask (repeatable)"),
    questions_file: Optional[Path] = typer.Option(None, "--questions", help="AVQA: file of questions, one per "
                                                  "line, or JSONL {video, question}"),
    window_stride: Optional[int] = typer.Option(None, "--window-stride", help="seconds between windows of a long "
                                                "video (default: T, no overlap; smaller values overlap)"),
    batch: Optional[int] = typer.Option(None, "--batch", help="windows per engine call (default: the bundle's)"),
    workers: int = typer.Option(2, "--workers", help="decoding threads"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="weights for --engine torch"),
    allow_missing_audio: bool = typer.Option(False, "--allow-missing-audio",
                                             help="run videos without an audio track on silence instead of failing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no table, no progress bar"),
) -> None:
    """Results of a bundle's task on videos: AVE/AVVP events per second, AVS masks, AVQA answers (no PyTorch)."""
    from caeav.runtime import InferOptions, Pipeline
    from caeav.runtime.pipeline import collect_videos
    from caeav.runtime.render import print_report

    inputs, bundle = default_inputs(videos, bundle)
    if window_stride is not None and window_stride < 1:
        raise CaeavError("--window-stride must be at least 1 second")
    check_outputs(json_out, plot, masks, overlay)
    endpoint = endpoint_settings(caption_endpoint, caption_model, captions, bundle)
    options = InferOptions(task=task, engine=engine, precision=precision, captions=captions, caption_endpoint=endpoint,
                           window_stride=window_stride, batch=batch, workers=workers,
                           allow_missing_audio=allow_missing_audio, checkpoint=checkpoint, plot=plot, masks=masks,
                           overlay=overlay, questions=list(question or []), questions_file=questions_file)
    pipe = Pipeline(bundle, options)
    pipe.captions.captioner(options)  # a bundle that cannot encode captions is one line before any work
    paths = collect_videos(inputs)
    if not paths:
        raise CaeavError("no video files found in " + ", ".join(str(i) for i in inputs))
    try:
        report = run_and_save(pipe, paths, json_out, quiet)
    finally:
        pipe.captions.close()
    if not quiet:
        print_report(report)
    if plot is not None and report.results:
        from caeav.runtime.plot import draw_figure

        draw_figure(report, plot)
    if report.failures:
        listed = "; ".join(f"{f.path}: {f.error}" if not f.error.startswith(f.path) else f.error
                           for f in report.failures[:3])
        more = f" (+{len(report.failures) - 3} more)" if len(report.failures) > 3 else ""
        raise BatchFailed(f"{len(report.failures)} of {len(paths)} video(s) failed: {listed}{more}")


def endpoint_settings(url: Optional[str], model: Optional[str], captions: Optional[str], bundle: Path):
    """--caption-endpoint/--caption-model -> `EndpointSettings` (None without an endpoint). A bad URL is one line;
    a --captions file that does not exist yet is created for the new captions (`prepare_cache`)."""
    import os

    if url is None:
        if model is not None:
            raise CaeavError("--caption-model needs --caption-endpoint URL")
        return None
    from caeav.captions.client import base_url
    from caeav.runtime.caption_endpoint import EndpointSettings, prepare_cache

    base_url(url)  # CaptionError for something that is not an http(s) URL
    if captions is not None and captions != "none" and not Path(captions).is_file():
        from caeav.runtime.bundle import Bundle

        prepare_cache(captions, Bundle.load(bundle))
    return EndpointSettings(url, model, api_key=os.environ.get("CAEAV_API_KEY") or None)


def run_and_save(pipe, paths: list, json_out: Optional[Path], quiet: bool):
    """Run the pipeline with a progress bar; with --json, results go to OUT.partial.jsonl as they finish and to
    OUT at the end, also when SIGINT/SIGTERM stops the run (then marked interrupted, and the signal goes on)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from caeav.runtime.results import PartialLog

    err = Console(stderr=True)
    report = pipe.new_report()
    log = PartialLog(json_out, report) if json_out is not None else None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet or len(paths) < 2 or not err.is_terminal) as bar:
        job = bar.add_task(f"infer ({pipe.model.engine} {pipe.model.precision})", total=len(paths))
        try:
            pipe.run(paths, progress=lambda _p: bar.advance(job), report=report,
                     on_result=log.add if log is not None else None)
        except KeyboardInterrupt:
            report.notes += pipe.captions.notes
            save(report, json_out, log)  # the clips finished so far, "interrupted": true
            raise
    report.notes += pipe.captions.notes  # the caption endpoint's one warning of the run
    if quiet:
        for note in pipe.captions.notes:
            err.print(f"warning: {note}", style="yellow", highlight=False, soft_wrap=True)
    save(report, json_out, log)
    return report


def save(report, json_out: Optional[Path], log) -> None:
    """OUT.json, then the partial file goes; if OUT.json cannot be written the partial file stays (and says so)."""
    from caeav.runtime.results import write_json

    if log is None:
        return
    try:
        write_json(report, json_out)
    except BaseException:
        log.close(remove=False)
        raise
    log.close(remove=True)
