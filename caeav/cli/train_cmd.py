"""`caeav train` and `caeav eval`: parse arguments, call `caeav.train.run` (torch is imported inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def train(
    task: str = typer.Argument(..., help="ave, avvp, avqa, avs_s4 (avs) or avs_ms3"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key=value, e.g. task.train.epochs=3"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset: tiny, base or paper"),
    data_root: Path = typer.Option(..., "--data-root", "-d", help="dataset folder (see caeav.data.layout)"),
    captions: Optional[Path] = typer.Option(None, "--captions", help="caption cache (caeav captions encode); "
                                            "default: the empty-caption features for every clip"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default runs/<task>-<config>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last/ checkpoint"),
    devices: int = typer.Option(1, "--devices", help="processes (GPUs, or CPU gloo workers) for DDP via torchrun"),
    workers: int = typer.Option(0, "--workers", help="data-loading worker processes"),
    media_cache: Optional[Path] = typer.Option(None, "--media-cache", help="folder caching decoded clips"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op CPU threads per process (default: "
                                          "PyTorch's; 1 is often fastest on a small shared machine)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Train CAE-AV on a task (architecture.md §8 recipe); writes last/, best/, metrics.csv, TensorBoard logs.
    Ctrl-C / SIGTERM stop at the next optimiser step with last/ saved and print the command that resumes."""
    import shlex

    from caeav.outputs import check_output_dir
    from caeav.train import distributed
    from caeav.train.run import prepare_run, stopped_note
    from caeav.train.run import train as run_training
    from caeav.train.trainer import TrainingError, TrainOptions

    check_output_dir(out or Path("runs"), "--out")
    cfg, run_dir = prepare_run(task, config, str(out) if out else None, overrides or [], resume)
    argv = ["train", task, "--config", config, "--data-root", str(data_root), "--out", str(run_dir),
            "--workers", str(workers), *(["--captions", str(captions)] if captions else []),
            *(["--media-cache", str(media_cache)] if media_cache else []),
            *(["--device", device] if device else []), *(["--resume"] if resume else []),
            *(["--threads", str(threads)] if threads else []),
            *(["--quiet"] if quiet else []), *(overrides or [])]
    resume_line = shlex.join(["caeav", *argv, *(["--devices", str(devices)] if devices > 1 else []),
                              *([] if resume else ["--resume"])])
    try:
        if devices > 1 and not distributed.under_torchrun():
            code = distributed.launch(devices, argv)
            if code != 0:
                raise TrainingError(f"distributed training failed (torchrun exit code {code}; see the ranks' "
                                    "messages above)")
            return
        opts = TrainOptions(data_root=str(data_root), out=str(run_dir), captions=str(captions) if captions else None,
                            resume=resume, workers=workers, media_cache=str(media_cache) if media_cache else None,
                            device=device, show_progress=not quiet, threads=threads)
        results = run_training(cfg, opts)
    except KeyboardInterrupt:  # also SIGTERM (caeav.errors.Terminated); the CLI adds its own line and exit code
        if distributed.reports_stop():
            typer.echo(stopped_note(run_dir, resume_line if not distributed.under_torchrun()
                                    else "the same torchrun command with --resume"), err=True)
        raise
    if distributed.under_torchrun() and int(__import__("os").environ.get("RANK", "0")) != 0:
        return
    best = results.get("best_val_score")
    typer.echo(f"run {run_dir}: best epoch {results.get('best_epoch')}, val score "
               + (f"{best:.2f}" if isinstance(best, (int, float)) else "n/a"))
    if "test" in results:
        typer.echo("test: " + ", ".join(f"{k} {v:.2f}" for k, v in results["test"].items()))


def evaluate(
    task: str = typer.Argument(..., help="ave, avvp, avqa, avs_s4 (avs) or avs_ms3"),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint directory (e.g. runs/ave-tiny/best)"),
    data_root: Path = typer.Option(..., "--data-root", "-d", help="dataset folder"),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    captions: Optional[Path] = typer.Option(None, "--captions", help="caption cache (default: empty captions)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="default: the run's batch size"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda"),
    media_cache: Optional[Path] = typer.Option(None, "--media-cache", help="folder caching decoded clips"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op CPU threads (default: PyTorch's)"),
    perturb: Optional[str] = typer.Option(None, "--perturb", help="also evaluate under these misalignments, e.g. "
                                          "swap-audio,offset:2,mute-audio,blank-frames,noise-audio:10,drop-captions"),
    seed: int = typer.Option(0, "--seed", help="seed of the perturbations (swap-audio derangement, noise)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Evaluate a checkpoint on one split with the task's exact metrics (and under --perturb misalignments)."""
    from caeav.train.run import evaluate_checkpoint

    result = evaluate_checkpoint(str(checkpoint), str(data_root), split, task, str(captions) if captions else None,
                                 batch_size, device, str(media_cache) if media_cache else None, threads=threads,
                                 perturb=perturb, seed=seed)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    elif perturb is not None:
        from caeav.cli.render import robustness_table

        robustness_table(result, captions is not None)
    else:
        typer.echo(f"{task} {split}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()))
