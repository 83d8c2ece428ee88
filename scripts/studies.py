"""The README's measured tables on synthetic data, reproducible with one command (CPU, `tiny` models):

    .venv/bin/python scripts/studies.py --out studies --seeds 0,1,2 --jobs 2

* robustness (issue 14): CAE-AV vs the AVMoE baseline (`variant=avmoe`), each with and without audio-visual shuffling
  (`task.train.av_shuffle` 0.2 and 0.5), trained on synthetic AVE with its synthetic captions, evaluated on the test split
  clean and under every `caeav eval --perturb` perturbation;
* captions (issue 13): CAE-AV trained with `task.train.caption_dropout` 0 and 0.5 on synthetic AVE and AVVP, test
  metric with the clips' captions and without them (the empty-caption features, i.e. `--perturb drop-captions`).

Every step is a `caeav` command (printed as it runs), so the study is also a walkthrough. Finished runs and evals are
kept and skipped on a rerun. Writes `<out>/results.json` and `<out>/tables.md` (mean ± sample standard deviation
over the seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PERTURB = "swap-audio,offset:2,offset:5,mute-audio,blank-frames,noise-audio:0,drop-captions"
ROBUSTNESS = [("CAE-AV", "cae_av", 0.0), ("CAE-AV + av_shuffle 0.2", "cae_av", 0.2),
              ("CAE-AV + av_shuffle 0.5", "cae_av", 0.5), ("AVMoE", "avmoe", 0.0),
              ("AVMoE + av_shuffle 0.2", "avmoe", 0.2), ("AVMoE + av_shuffle 0.5", "avmoe", 0.5)]
CAPTION_DROPOUT = (0.0, 0.5)
SCORE = {"ave": "segment accuracy (%)", "avvp": "segment-level Type@AV F1 (%)"}


def caeav(*args: str, log: Path | None = None) -> None:
    exe = Path(sys.executable).with_name("caeav")
    cmd = [str(exe), *args]
    print("$ caeav " + " ".join(args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") if log else open(os.devnull, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): caeav {' '.join(args)}" + (f"; see {log}" if log else ""))


def dataset(out: Path, task: str, clips: int) -> tuple[Path, Path]:
    """Synthetic `task` data with its captions imported and encoded by the tiny text tower."""
    root, cache = out / f"data-{task}", out / f"data-{task}" / "captions.sqlite"
    if not (cache.is_file() and (root / ".complete").is_file()):
        if root.exists():
            import shutil

            shutil.rmtree(root)
        caeav("data", "synth", task, "--out", str(root), "--clips", str(clips), "--media", "frames", "--seed", "0")
        caeav("captions", "import", str(root / "captions.jsonl"), "--cache", str(cache))
        caeav("captions", "encode", "--cache", str(cache), "--config", "tiny")
        (root / ".complete").write_text("")
    return root, cache


def run_and_eval(out: Path, task: str, root: Path, cache: Path, name: str, overrides: list[str]) -> dict:
    run = out / "runs" / task / name
    if not (run / "best" / "config.json").is_file():
        run.parent.mkdir(parents=True, exist_ok=True)
        caeav("train", task, "--config", "tiny", "--data-root", str(root), "--captions", str(cache), "--out", str(run),
              "--threads", "1", "-q", *overrides, log=run.parent / f"{run.name}.log")
    result = out / "evals" / task / f"{name}.json"
    if not result.is_file():
        result.parent.mkdir(parents=True, exist_ok=True)
        perturb = PERTURB if task == "ave" else "drop-captions"
        tmp = result.with_suffix(".tmp")
        caeav("eval", task, "--checkpoint", str(run / "best"), "--data-root", str(root), "--captions", str(cache),
              "--threads", "1", "--perturb", perturb, "--json", log=tmp)
        tmp.replace(result)
    return json.loads(result.read_text())


def cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def tables(results: dict, seeds: list[int]) -> str:
    lines = [f"Seeds {', '.join(map(str, seeds))} (`task.train.seed`); mean ± sample standard deviation over seeds.",
             "", f"**Robustness to misalignment** (synthetic AVE test split, {SCORE['ave']}):", ""]
    labels = ["clean"] + PERTURB.split(",")
    lines += ["| model | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for title, _, _ in ROBUSTNESS:
        evals = results["robustness"][title]
        row = [cell([e["clean"]["score"] for e in evals])]
        row += [cell([e["perturbed"][p]["score"] for e in evals]) for p in labels[1:]]
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    lines += ["", "**Captions at inference** (test split; with = the clips' captions, without = the empty-caption "
              "features):", "", "| task | caption_dropout | with captions | without captions | Δ |",
              "|---|---|---|---|---|"]
    for task, by_p in results["captions"].items():
        for p, evals in by_p.items():
            with_c = [e["clean"]["score"] for e in evals]
            without = [e["perturbed"]["drop-captions"]["score"] for e in evals]
            delta = [b - a for a, b in zip(with_c, without)]
            lines.append(f"| {task} ({SCORE[task]}) | {p} | {cell(with_c)} | {cell(without)} | {cell(delta)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="studies")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--clips", type=int, default=8, help="clips per split of the synthetic sets")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (one thread each)")
    args = ap.parse_args()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    data = {task: dataset(out, task, args.clips) for task in ("ave", "avvp")}
    jobs = []  # (table, key, sub-key, task, run name, overrides)
    for seed in seeds:
        for title, variant, shuffle in ROBUSTNESS:
            name = f"{variant}-shuffle{shuffle:g}-seed{seed}"
            jobs.append(("robustness", title, None, "ave", name,
                         [f"variant={variant}", f"task.train.av_shuffle={shuffle}", f"task.train.seed={seed}"]))
        for task in ("ave", "avvp"):
            for p in CAPTION_DROPOUT:
                if task == "ave" and p == 0.0:  # the same run as the robustness table's CAE-AV row
                    name = f"cae_av-shuffle0-seed{seed}"
                else:
                    name = f"cae_av-dropout{p:g}-seed{seed}"
                over = ["variant=cae_av", f"task.train.seed={seed}"] + (
                    ["task.train.av_shuffle=0.0"] if name.startswith("cae_av-shuffle") else
                    [f"task.train.caption_dropout={p}"])
                jobs.append(("captions", task, f"{p:g}", task, name, over))
    unique = {(j[3], j[4]): j for j in jobs}
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(unique, pool.map(lambda j: run_and_eval(out, j[3], *data[j[3]], j[4], j[5]),
                                         unique.values())))
    results: dict = {"seeds": seeds, "clips_per_split": args.clips, "robustness": {}, "captions": {}}
    for table, key, sub, task, name, _ in jobs:
        slot = results[table].setdefault(key, {} if sub is not None else [])
        (slot.setdefault(sub, []) if sub is not None else slot).append(done[(task, name)])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = tables(results, seeds)
    (out / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
