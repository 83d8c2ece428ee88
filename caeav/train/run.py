"""What `caeav train` and `caeav eval` call: resolve a run's config and directory, train, evaluate a checkpoint.

    cfg, out = prepare_run("ave", "tiny", "runs/ave", overrides=["task.train.epochs=3"], resume=False)
    results = train(cfg, TrainOptions(data_root="data/ave", out=out))
    metrics = evaluate_checkpoint("runs/ave/best", "data/ave", split="test")
    print(stopped_note("runs/ave", "caeav train ave ... --resume"))   # after Ctrl-C: what last/ holds, how to resume
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from caeav.config import ModelConfig, apply_overrides, canonical_task, load_config
from caeav.errors import CaeavError
from caeav.train.augment import check_options
from caeav.train.trainer import (Trainer, TrainingError, TrainOptions, autocast_context, existing_run,
                                 resolve_precision)


def default_run_dir(task: str, preset: str, base: str = "runs") -> Path:
    """runs/<task>-<preset>, or the first free runs/<task>-<preset>-<n>."""
    stem = Path(base) / f"{task}-{preset}"
    path, n = stem, 2
    while path.exists():
        path, n = Path(f"{stem}-{n}"), n + 1
    return path


def prepare_run(task: str, preset: str, out: Optional[str], overrides: Optional[list[str]] = None,
                resume: bool = False) -> tuple[ModelConfig, Path]:
    """The config of a new run (preset + task + overrides), or of the run being resumed (its stored config +
    overrides, e.g. more epochs), and the run directory."""
    from caeav.model.checkpoint import read_checkpoint_config

    task = canonical_task(task)
    if resume:
        if not out:
            raise TrainingError("--resume needs --out RUN_DIR (the run to continue)")
        cfg, _ = read_checkpoint_config(Path(out) / "last")
        if cfg.task.name != task:
            raise TrainingError(f"{out} is a {cfg.task.name} run, not {task}")
        if overrides:
            cfg = ModelConfig.from_dict(apply_overrides(cfg.to_dict(), overrides))
        check_options(cfg)
        return cfg, Path(out)
    cfg = load_config(preset, task, overrides)
    if cfg.task.train.batch_size < 1 or cfg.task.train.accum_steps < 1 or cfg.task.train.epochs < 1:
        raise TrainingError("task.train.batch_size, accum_steps and epochs must be at least 1")
    check_options(cfg)
    return cfg, Path(out) if out else default_run_dir(task, preset)


def set_threads(threads: Optional[int]) -> None:
    """Intra-op CPU threads for this process (None: PyTorch's default). On a small machine that runs anything else,
    fewer threads than cores can be many times faster: OpenMP regions wait for descheduled threads (measured on 2
    cores: a tiny forward 0.2 s with one thread, 10-15 s with two while another job ran)."""
    if threads is None:
        return
    if threads < 1:
        raise CaeavError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def train(cfg: ModelConfig, opts: TrainOptions) -> dict:
    from caeav.train import distributed

    info = distributed.setup(opts.device)
    set_threads(opts.threads)  # after setup, which picks a per-rank default for CPU DDP: an explicit --threads wins
    try:
        return Trainer(cfg, opts, info).fit()
    finally:
        distributed.teardown(info)


def stopped_note(run_dir, resume_command: str) -> str:
    """The line `caeav train` prints when a signal stopped it: what `last/` holds and the command that continues
    the run (or, when nothing was saved yet, how to start again)."""
    from caeav.model.checkpoint import STATE_FILE, resolve_checkpoint_dir

    run_dir = Path(run_dir)
    try:
        path = resolve_checkpoint_dir(run_dir / "last")
        state = json.loads((path / STATE_FILE).read_text())
        epoch, step = int(state["epoch"]), int(state["step_in_epoch"])
    except (CaeavError, OSError, ValueError, KeyError, TypeError):
        again = "run the same command again" if existing_run(run_dir) is None else "choose a new --out"
        return f"caeav: no checkpoint was saved in {run_dir} yet; to start over, {again}"
    held = f"epoch {epoch + 1} after {step} micro-batches" if step else f"{epoch} complete epoch(s)"
    return f"caeav: {path} holds {held}; resume with: {resume_command}"


def evaluate_checkpoint(checkpoint: str, data_root: str, split: str = "test", task: Optional[str] = None,
                        captions: Optional[str] = None, batch_size: Optional[int] = None,
                        device: Optional[str] = None, media_cache: Optional[str] = None, workers: int = 0,
                        threads: Optional[int] = None, perturb: Optional[str] = None, seed: int = 0) -> dict:
    """Metrics of a checkpoint directory on one split of a dataset. With `perturb` ("swap-audio,offset:2,...",
    `caeav.train.perturb`): {"clean": metrics, "perturbed": {label: metrics + "delta"}, ...}, every row from the same
    model, split and loader order, so the clean row is exactly the plain evaluation."""
    import torch

    set_threads(threads)
    from caeav.model.checkpoint import load_checkpoint
    from caeav.train.batches import build_split, caption_hook, collate, empty_features
    from caeav.train.evaluate import SCORE_KEY, evaluate
    from caeav.train.perturb import PerturbedDataset, parse_perturbations
    from caeav.train.sampler import EpochSampler

    if split not in ("train", "val", "test"):
        raise CaeavError(f"--split must be train, val or test, got {split!r}")
    wanted = parse_perturbations(perturb) if perturb is not None else []
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_checkpoint(checkpoint, device=dev)
    if task is not None and canonical_task(task) != cfg.task.name:
        raise CaeavError(f"{checkpoint} holds a {cfg.task.name} model, not {canonical_task(task)}")
    hook = caption_hook(cfg, captions)
    dataset = build_split(cfg, split, data_root, hook, media_cache)
    precision = resolve_precision(cfg.task.train.precision, dev)

    def run(data) -> dict:
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size or cfg.task.train.batch_size,
                                             sampler=EpochSampler(len(data), 0, shuffle=False), collate_fn=collate,
                                             num_workers=workers)
        return evaluate(model, loader, cfg, dev, lambda: autocast_context(precision, dev))

    clean = run(dataset)
    if not wanted:
        return clean
    empty = empty_features(hook) if any(p.name == "drop-captions" for p in wanted) else None
    rows = {}
    for p in wanted:
        data = PerturbedDataset(dataset, p, seed=seed, sample_rate=cfg.frontend.sample_rate, empty_caption=empty)
        metrics = run(data)
        rows[p.label] = {**metrics, "delta": metrics["score"] - clean["score"]}
    return {"task": cfg.task.name, "variant": cfg.variant, "split": split, "clips": len(dataset), "seed": seed,
            "score": SCORE_KEY[cfg.task.name], "clean": clean, "perturbed": rows}
