"""The training loop, readable top to bottom (`Trainer.fit`): the recipe of architecture.md §8.2 on a caeav dataset.

    trainer = Trainer(load_config("tiny", "ave"), TrainOptions(data_root="data/ave", out="runs/ave"))
    results = trainer.fit()          # {"best_epoch", "best_val", "test"}; run dir: last/, best/, metrics.csv, ...

Per epoch: micro-batches of `task.train.batch_size` clips; every `accum_steps` of them one Adam step (losses are
*summed* over the micro-batches, as the authors' scripts do, §8.2), gradients clipped to `grad_clip` (0 = off); StepLR
once per epoch; validation with the exact metrics; `last/` rewritten every epoch (and every `checkpoint_every` steps),
`best/` when the validation score improves. The test split is evaluated once, with the best weights, at the end.
A non-finite loss stops the run with `TrainingError`, after making sure `last/` holds the last good state.
Ctrl-C / SIGTERM stop it at the next optimiser step with `last/` rewritten there (`caeav.train.interrupt`).

Resume (`TrainOptions.resume`): `last/` stores the weights, Adam and StepLR state, every rank's RNG state, the epoch
and the number of micro-batches already consumed in it; the data order is a function of (seed, epoch)
(`EpochSampler`), so the resumed run continues with the same items and ends with the same weights. Its files are
checked against their sha256 and the weights loaded as strictly as `caeav eval` loads them
(`caeav.model.checkpoint.load_model_weights`). A fresh run refuses a directory that already holds one
(`existing_run`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from caeav.config import ModelConfig
from caeav.errors import CaeavError
from caeav.files import write_bytes_atomic, write_json_atomic
from caeav.model.checkpoint import (load_model_weights, load_trainer_state, resolve_checkpoint_dir, save_checkpoint,
                                    unwrap)
from caeav.train import distributed as D
from caeav.train.batches import (build_split, caption_coverage_note, caption_hook, collate, empty_features,
                                 loss_targets, model_inputs, st_source_note, to_device)
from caeav.train.evaluate import evaluate
from caeav.train.interrupt import StopRequest, ignore_stop_signals
from caeav.train.logger import RunLogger
from caeav.train.optim import build_optimizer, build_scheduler
from caeav.train.sampler import EpochSampler
from caeav.train.state import restore_rng_state, rng_state, seed_everything


class TrainingError(CaeavError):
    """Training cannot go on (a non-finite loss, an unusable run directory)."""


CHECKPOINTS = ("last", "best")
RESUME_KEYS = ("epoch", "step_in_epoch", "global_step", "best_score", "best_epoch", "since_best", "sums",
               "scheduler")


def existing_run(run_dir: Path) -> Optional[str]:
    """What in `run_dir` shows that a run was trained there, or None: a checkpoint, the `<ckpt>.tmp-<pid>` /
    `<ckpt>.old-<pid>` a writer left (killed mid-write, or between the two renames), results, or metrics rows."""
    for name in CHECKPOINTS:
        found = [run_dir / name] if (run_dir / name).exists() else []
        found += sorted(run_dir.glob(f"{name}.old-*")) + sorted(run_dir.glob(f"{name}.tmp-*"))
        if found:
            return found[0].name + ("/" if found[0].is_dir() else "")
    if (run_dir / "results.json").exists():
        return "results.json"
    metrics = run_dir / "metrics.csv"
    if metrics.is_file() and len(metrics.read_bytes().splitlines()) > 1:
        return "metrics.csv with epoch rows"
    return None


def resolve_precision(want: str, device: torch.device) -> str:
    """`task.train.precision` on `device`: fp32 on CPU (autocast on GPUs only); "auto" = bf16 where the GPU has it,
    else fp16."""
    if want not in ("auto", "fp32", "bf16", "fp16"):
        raise TrainingError(f"task.train.precision must be auto, fp32, bf16 or fp16, got {want!r}")
    if device.type != "cuda":
        return "fp32"
    if want == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return want


def autocast_context(precision: str, device: torch.device):
    """A fresh autocast context for a resolved precision (a null context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@dataclass
class TrainOptions:
    data_root: str
    out: str
    captions: Optional[str] = None  # caption cache (sqlite); None = empty-caption features for every clip
    resume: bool = False
    workers: int = 0
    media_cache: Optional[str] = None  # decoded-media cache folder (caeav.data)
    device: Optional[str] = None  # default: cuda when available, else cpu
    show_progress: bool = True
    eval_test: bool = True
    threads: Optional[int] = None  # intra-op CPU threads (None: PyTorch's default)
    max_steps: Optional[int] = None  # test hook: return (as if killed) after this many optimiser steps in this process


class Trainer:
    def __init__(self, cfg: ModelConfig, opts: TrainOptions, dist: Optional[D.DistInfo] = None):
        self.cfg, self.opts = cfg, opts
        self.dist = dist or D.setup(opts.device)
        self.run_dir = Path(opts.out)
        self.log = RunLogger(self.run_dir, enabled=self.dist.is_main, show_progress=opts.show_progress)
        self.device = self.dist.device
        self.precision = resolve_precision(cfg.task.train.precision, self.device)
        self._stop = StopRequest()  # replaced by the active one while `fit` runs its epochs

    # ------------------------------------------------------------------------------------------------ set-up

    def autocast(self):
        return autocast_context(self.precision, self.device)

    def _loader(self, dataset, sampler, batch_size):
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                           num_workers=self.opts.workers, pin_memory=self.device.type == "cuda",
                                           generator=torch.Generator().manual_seed(0),
                                           worker_init_fn=ignore_stop_signals if self.opts.workers else None)

    def _setup(self) -> Optional[dict]:
        """Model, optimiser, scheduler, data; returns the resumed trainer state (or None for a fresh run)."""
        from caeav.model.cae_av import build_model

        cfg, train = self.cfg, self.cfg.task.train
        found = None if self.opts.resume else existing_run(self.run_dir)
        if found:
            raise TrainingError(f"{self.run_dir} already holds a run ({found}); pass --resume to continue it, or "
                                "choose a new --out")
        seed_everything(train.seed)
        self.model = build_model(cfg, device=self.device)
        self.optimizer = build_optimizer(self.model, train)
        self.scheduler = build_scheduler(self.optimizer, train)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        state = self._resume() if self.opts.resume else None
        self.net = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # static graph: some parameters (CASE's τ) reach the loss through `aux`, not through the head outputs,
            # and some never get a gradient (unused template layers); the set is the same every iteration
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids, static_graph=True)
        self.captions = caption_hook(cfg, self.opts.captions)  # built once (the empty-caption path runs the tower)
        root, cache = self.opts.data_root, self.opts.media_cache
        self.train_set = build_split(cfg, "train", root, self.captions, cache)
        self.val_set = build_split(cfg, "val", root, self.captions, cache) if self.dist.is_main else None
        self.sampler = EpochSampler(len(self.train_set), train.seed, True, self.dist.rank, self.dist.world)
        for note in (caption_coverage_note(self.captions, self.train_set), st_source_note(self.train_set, cache)):
            if note:
                self.log.info(note)
        from caeav.train.augment import Augmenter

        empty = empty_features(self.captions) if train.caption_dropout > 0 else None
        self.augment = Augmenter(cfg, empty)  # caption_dropout / av_shuffle (off in the paper's recipe)
        return state

    def _resume(self) -> dict:
        """Load last/ (or the `last.old-<pid>` a crash between its renames left) into model, optimiser, scheduler,
        scaler and RNGs; every damaged or misfitting file is one TrainingError / WeightsError line."""
        try:
            path = resolve_checkpoint_dir(self.run_dir / "last")
        except CaeavError:
            raise TrainingError(f"--resume: {self.run_dir / 'last'} holds no checkpoint to resume from; start "
                                "afresh with a new --out") from None
        if path.name != "last":
            self.log.info(f"resuming from {path}, the complete checkpoint a save cut short left beside last/")
        load_model_weights(self.model, path)  # sha256, then eval's strict key and shape check
        state = load_trainer_state(path) or {}
        missing = [k for k in ("optimizer",) + RESUME_KEYS if k not in state]
        if missing:
            raise TrainingError(f"{path} has no {', '.join(missing)} in its trainer state; it cannot be resumed")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise TrainingError(f"{path}: its optimiser state does not fit this model ({' '.join(str(exc).split())})"
                                ) from None
        rngs = state.get("rng", [])
        if len(rngs) == self.dist.world:
            restore_rng_state(rngs[self.dist.rank])
        else:  # another world size: the data order still matches, the dropout / Gumbel noise cannot
            seed_everything(self.cfg.task.train.seed + 7919 * state["global_step"])
        self.log.truncate(state["epoch"])
        return state

    # ------------------------------------------------------------------------------------------------ checkpoints

    def _save_last(self, progress: dict) -> None:
        """Rewrite last/ with everything resume needs (called on every rank: the RNG states are gathered)."""
        rngs = D.gather_objects(rng_state(), self.dist)
        if self.dist.is_main:
            state = dict(progress, rng=rngs, world=self.dist.world, optimizer=self.optimizer.state_dict(),
                         scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None)
            save_checkpoint(self.model, self.cfg, self.run_dir / "last", state)
        D.barrier(self.dist)

    def _diverged(self, loss: float, parts: dict, progress: dict) -> None:
        params_ok = all(torch.isfinite(p).all() for p in self.model.parameters() if p.requires_grad)
        if params_ok:  # the weights of the last completed step are good: make last/ hold exactly them
            self._save_last(progress)
        where = self.run_dir / "last"
        held = f"the last good checkpoint is {where}" if where.exists() else "no checkpoint was written yet"
        named = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items()) if parts else ""
        raise TrainingError(
            f"the training loss became {loss} at epoch {progress['epoch'] + 1}, optimiser step "
            f"{progress['global_step'] + 1} ({named}); stopped: {held} (resume with --resume after lowering "
            f"task.train.lr or setting task.train.grad_clip)")

    # ------------------------------------------------------------------------------------------------ the loop

    def _optimiser_step(self) -> None:
        clip = self.cfg.task.train.grad_clip
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _train_epoch(self, epoch: int, progress: dict) -> Optional[dict]:
        """One epoch from `progress["step_in_epoch"]` on; returns the epoch's mean loss parts, or None when the
        `max_steps` hook stopped the run."""
        train = self.cfg.task.train
        accum, batch = max(1, train.accum_steps), train.batch_size
        self.sampler.set_epoch(epoch, skip=progress["step_in_epoch"] * batch)
        loader = self._loader(self.train_set, self.sampler, batch)
        mask_size = getattr(unwrap(self.net).head, "mask_size", None)
        sums = progress.setdefault("sums", {})
        self.net.train()
        pending = 0
        n_micro = math.ceil(len(self.sampler) / batch)
        with self.log.progress(len(self.sampler), f"epoch {epoch + 1}/{train.epochs}") as bar:
            for i, data in enumerate(loader):
                data = self.augment(to_device(data, self.device), epoch, progress["step_in_epoch"])
                pending += 1
                last_of_group = pending == accum or i == n_micro - 1
                sync = self.net.no_sync() if self.dist.enabled and not last_of_group else contextlib.nullcontext()
                with sync:
                    with self.autocast():
                        outputs = self.net(**model_inputs(data, self.cfg, training=True))
                        loss, parts = unwrap(self.net).loss(outputs, loss_targets(data, self.cfg, mask_size), epoch)
                    loss_value = float(loss.detach())  # the one host sync of the loss per micro-batch
                    if D.any_true(not math.isfinite(loss_value), self.dist):
                        self._diverged(loss_value, parts, progress)
                    self.scaler.scale(loss).backward()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                sums["_n"] = sums.get("_n", 0) + 1
                progress["step_in_epoch"] += 1
                bar.advance(len(data["frames"]), loss=loss_value)
                if not last_of_group:
                    continue
                self._optimiser_step()
                pending = 0
                progress["global_step"] += 1
                self.log.scalars({"train/loss": loss_value, "train/lr": self.optimizer.param_groups[0]["lr"]},
                                 progress["global_step"])
                self._steps_here += 1
                every = train.checkpoint_every
                saved = every > 0 and progress["global_step"] % every == 0 and i < n_micro - 1
                if saved:
                    self._save_last(progress)
                if self.opts.max_steps is not None and self._steps_here >= self.opts.max_steps:
                    return None
                if D.any_true(self._stop.requested, self.dist):  # every rank stops at the same step
                    self._stop_at_step(progress, saved)
            progress["clips_per_s"] = bar.rate
        n = max(sums.pop("_n", 1), 1)
        means = {k: v / n for k, v in sums.items()}
        progress["sums"] = {}
        return means

    def _stop_at_step(self, progress: dict, saved: bool) -> None:
        """Ctrl-C / SIGTERM arrived: make last/ hold this optimiser-step boundary (what a `checkpoint_every` save
        holds, so resuming continues exactly here), then raise the held signal's KeyboardInterrupt / Terminated."""
        if not saved:
            self._save_last(progress)
        self._stop.deliver()

    def _validate(self) -> Optional[dict]:
        if not self.dist.is_main:
            return None
        loader = self._loader(self.val_set, EpochSampler(len(self.val_set), 0, shuffle=False),
                              self.cfg.task.train.batch_size)
        with self.log.progress(len(self.val_set), "  validation") as bar:
            return evaluate(self.model, loader, self.cfg, self.device, self.autocast, lambda n: bar.advance(n))

    def fit(self) -> dict:
        state = self._setup()
        self._steps_here = 0
        keys = ("epoch", "step_in_epoch", "global_step", "best_score", "best_epoch", "since_best", "sums")
        progress = {k: state[k] for k in keys} if state else {
            "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": None, "best_epoch": None,
            "since_best": 0, "sums": {}}
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.run_dir / "config.json", self.cfg.to_json().encode())
            if state is None:  # `existing_run` let it through: at most the header of a run stopped in epoch 1
                (self.run_dir / "metrics.csv").unlink(missing_ok=True)
        try:
            with StopRequest(announce=self.dist.is_main) as self._stop:
                if not self._epochs(progress):
                    return {"stopped": True, "global_step": progress["global_step"]}
            return self._finish(progress)  # a signal during the test evaluation stops at once: last/ is complete
        finally:
            self.log.close()

    def _epochs(self, progress: dict) -> bool:
        """Train and validate epoch by epoch until `task.train.epochs` or early stop (True), or until the
        `max_steps` hook fires (False); last/ is rewritten after every epoch."""
        train = self.cfg.task.train
        while progress["epoch"] < train.epochs:
            epoch, start = progress["epoch"], time.perf_counter()
            means = self._train_epoch(epoch, progress)
            if means is None:
                return False
            lr = self.optimizer.param_groups[0]["lr"]
            with warnings.catch_warnings():  # resumed at an epoch's end, this process has not stepped the optimiser
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                self.scheduler.step()
            val = D.broadcast_object(self._validate(), self.dist)
            improved = progress["best_score"] is None or val["score"] > progress["best_score"]
            progress.update(epoch=epoch + 1, step_in_epoch=0)
            if improved:
                progress.update(best_score=val["score"], best_epoch=epoch + 1, since_best=0)
                if self.dist.is_main:
                    save_checkpoint(self.model, self.cfg, self.run_dir / "best", {"epoch": epoch + 1, "val": val})
            else:
                progress["since_best"] += 1
            row = {"epoch": epoch + 1, "lr": lr,
                   **{f"train_{k}": v for k, v in means.items()}, **{f"val_{k}": v for k, v in val.items()},
                   "clips_per_s": progress.pop("clips_per_s", 0.0), "seconds": time.perf_counter() - start}
            self.log.epoch_row(row)
            self.log.info(f"epoch {epoch + 1}: loss {means.get('total', float('nan')):.4f}  "
                          f"val score {val['score']:.2f}" + ("  (best)" if improved else ""))
            self._save_last(progress)
            if D.any_true(self._stop.requested, self.dist):  # a signal held through validation: last/ is this epoch
                self._stop.deliver()
            if 0 < train.early_stop <= progress["since_best"]:
                self.log.info(f"early stop: no improvement for {train.early_stop} epochs")
                break
        return True

    def _finish(self, progress: dict) -> dict:
        """Test split once, with the best validation weights; results.json."""
        results = {"best_epoch": progress["best_epoch"], "best_val_score": progress["best_score"]}
        if self.dist.is_main:
            best = self.run_dir / "best"
            if best.exists():
                load_model_weights(self.model, best)
                results["best_val"] = (load_trainer_state(best) or {}).get("val")
            if self.opts.eval_test:
                test_set = build_split(self.cfg, "test", self.opts.data_root, self.captions, self.opts.media_cache)
                loader = self._loader(test_set, EpochSampler(len(test_set), 0, shuffle=False),
                                      self.cfg.task.train.batch_size)
                results["test"] = evaluate(self.model, loader, self.cfg, self.device, self.autocast)
                self.log.info(f"test ({len(test_set)} items): " +
                              ", ".join(f"{k} {v:.2f}" for k, v in results["test"].items()))
            write_json_atomic(self.run_dir / "results.json", results)
        D.barrier(self.dist)
        return results
