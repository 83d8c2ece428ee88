"""Where the time goes in one bundle graph on onnxruntime's CPU provider: per op type and per model component.

    python benchmarks/ort_profile.py GRAPH.onnx [GRAPH2.onnx ...] [--threads 2] [--runs 2] [--top 12]

Each graph runs `--runs` times (after one warm-up) on random inputs at batch 1 (`batch_t` = T = 10 frames) with
onnxruntime's profiler on; the kernel times of all runs (warm-up included) are summed per op type (after onnxruntime's fusions,
so `FusedMatMul`, `DynamicQuantizeMatMul` ... appear as what really ran) and per component: the module path that
torch's exporter recorded on the node (`pkg.torch.onnx.name_scopes`), cut to its first `--depth` parts. Several
graphs (the FP32 encoder and its int8cpu variant, say) print side by side with the ratio of their run times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def _scopes(path: Path, depth: int) -> dict:
    """node name -> component ("encoder.visual.layers" ...) from the exporter's scope metadata (nodes without it,
    such as those a quantiser added, are left out: `_fused_scope` finds them by name)."""
    import ast

    import onnx

    out = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        scope = next((p.value for p in node.metadata_props if p.key == SCOPE_KEY), "")
        try:
            parts = ast.literal_eval(scope) if scope.startswith("[") else [scope]
        except (ValueError, SyntaxError):
            parts = [scope]
        modules = [p for p in parts[:-1] if p]  # the last entry names the op itself ("linear_181")
        if modules:
            out[node.name] = ".".join(modules[-1].split(".")[:depth])
    return out


def random_feeds(sess, segments: int, batch: int = 1) -> dict:
    """Seeded random inputs for an onnxruntime session of a bundle graph: `batch` clips (`batch_t` = batch × T)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (segments * batch if d == "batch_t" else batch) for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32) if "float" in i.type else np.zeros(shape, np.int64)
    return feeds


def profile(path: Path, threads: int, runs: int, depth: int, segments: int, scopes_from=None) -> dict:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feeds = random_feeds(sess, segments)
        sess.run(None, feeds)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        events = json.load(open(sess.end_profiling()))
    scopes = {**_scopes(scopes_from, depth), **_scopes(path, depth)} if scopes_from else _scopes(path, depth)
    by_op, by_scope = defaultdict(float), defaultdict(float)
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        by_op[ev["args"].get("op_name", "?")] += ev["dur"]
        by_scope[scopes.get(node, _fused_scope(node, scopes))] += ev["dur"]
    total = sum(by_op.values()) or 1.0
    return {"file": path.name, "median_s": statistics.median(times), "total_us": total,
            "by_op": {k: v / total for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "by_scope": {k: v / total for k, v in sorted(by_scope.items(), key=lambda kv: -kv[1])}}


def _fused_scope(node: str, scopes: dict) -> str:
    """A node onnxruntime made (fusion, quantisation): the component of the original node its name starts with."""
    best = max((n for n in scopes if n and node.startswith(n)), key=len, default=None)
    return scopes[best] if best else "(fused by onnxruntime)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graphs", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--scopes-from", type=Path, default=None, help="FP32 graph whose scope metadata names the nodes "
                    "a quantiser made (matched by name prefix)")
    ap.add_argument("--segments", type=int, default=10)
    args = ap.parse_args(argv)
    results = [profile(g, args.threads, args.runs, args.depth, args.segments, args.scopes_from) for g in args.graphs]
    base = results[0]["median_s"]
    for r in results:
        print(f"\n{r['file']}: median {r['median_s']:.2f} s per call ({base / r['median_s']:.2f}x the first graph), "
              f"{args.threads} threads, batch 1")
        for title, table in (("op type", r["by_op"]), ("component", r["by_scope"])):
            print(f"  {'share':>6s}  {title}")
            for name, share in list(table.items())[: args.top]:
                print(f"  {100 * share:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
