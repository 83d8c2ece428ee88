"""`caeav train TASK --config tiny` end to end on synthetic data: the loss falls and the best validation score beats
the best *constant* predictor on the same validation split (so a model that ignores its inputs fails)."""

import csv
import json

import numpy as np
import pytest
import torch

from caeav import metrics
from caeav.cli.main import main
from caeav.config import load_config
from caeav.data.datasets import build_dataset
from caeav.data.synth import synth_dataset



def ave_baseline(root):
    """Majority segment label (usually background) on val, in percent."""
    labels = np.stack([item["labels"].argmax(-1) for item in _items(root, "ave", "val", ("labels",))])
    return 100.0 * np.bincount(labels.ravel()).max() / labels.size


def avvp_baseline(root):
    """Best segment-level Type@AV of predicting nothing or every class everywhere."""
    items = _items(root, "avvp", "val", ("gt_audio", "gt_visual"))
    gt_a, gt_v = np.stack([i["gt_audio"] for i in items]), np.stack([i["gt_visual"] for i in items])
    return max(metrics.avvp_scores(c, c, gt_a, gt_v)["segment"]["type_av"]
               for c in (np.zeros_like(gt_a), np.ones_like(gt_a)))


def avs_baseline(root):
    """Best mIoU of an empty or a full mask on every frame."""
    gts = [i["masks"] for i in _items(root, "avs_s4", "val", ("masks",))]
    return max(metrics.avs_scores([(np.full(g.shape, v, np.float32), g) for g in gts])["miou"] for v in (-9.0, 9.0))


def avqa_baseline(root):
    """Accuracy on val of always answering the most frequent training answer (33.3 % on the 4-clip synthetic set; a
    per-template answer prior scores 63.9 %, so the 15-point margin needs the question, not just the answer counts)."""
    train = [i["answer"] for i in _items(root, "avqa", "train", ("answer",))]
    val = np.array([i["answer"] for i in _items(root, "avqa", "val", ("answer",))])
    return 100.0 * np.mean(val == np.bincount(train).argmax())


def _items(root, task, split, keys):
    ds = build_dataset(task, root, split, size=64)
    return [{k: ds[i][k] for k in keys} for i in range(len(ds))]


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


CASES = {
    # task: (clips per split, loss ratio last/first epoch below, baseline, margin); the `tiny` preset's own recipe
    "ave": (8, 0.5, ave_baseline, 10.0),
    "avvp": (8, 0.9, avvp_baseline, 5.0),
    "avs_s4": (4, 0.9, avs_baseline, 0.1),
    "avqa": (4, 0.9, avqa_baseline, 15.0),
}


@pytest.fixture
def threads_restored():
    """Starts the test with two intra-op threads and restores the count after it: `--threads 1` must bring it to one
    (with two OpenMP threads on a 2-core machine that runs anything else, every parallel region waits for a
    descheduled thread and a step takes 30-70x longer; measured: 0.2 s vs 10-15 s a forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(CASES))
def test_tiny_training_learns_synthetic_task(task, tmp_path, threads_restored):
    clips, ratio, baseline, margin = CASES[task]
    root = tmp_path / "data"
    synth_dataset(task, root, seed=0, clips=clips, media="frames")
    run = tmp_path / "run"
    args = ["train", task, "--config", "tiny", "--data-root", str(root), "--out", str(run), "-q", "--threads", "1"]
    assert main(args) == 0  # the command a user types: no recipe overrides
    assert torch.get_num_threads() == 1
    rows = _rows(run)
    train = load_config("tiny", task).task.train
    assert 0 < len(rows) <= train.epochs and (len(rows) == train.epochs or train.early_stop > 0)
    losses = [float(r["train_total"]) for r in rows]
    assert losses[-1] < ratio * losses[0], f"training loss did not fall enough: {losses}"
    best = max(float(r["val_score"]) for r in rows)
    results = json.loads((run / "results.json").read_text())
    assert results["best_val_score"] == pytest.approx(best, abs=1e-4) and set(results["test"]) >= {"score"}
    assert (run / "best" / "model.safetensors").is_file() and list((run / "tensorboard").iterdir())
    chance = baseline(root)
    assert best > chance + margin, f"best validation score {best:.3f} does not beat the constant baseline {chance:.3f}"
