"""Peak memory and latency of a bundle's graphs on onnxruntime's CPU provider, per session setting, side by side.

    python benchmarks/ort_memory.py BUNDLE [--precision fp32] [--batch 1] [--threads 2] [--runs 2]

Each setting runs in a fresh Python process (so the peaks do not mix): load every graph one clip runs, then run the
chain `--runs` times on the same random inputs (`--batch` clips). Prints, per setting, peak RSS after loading and after
the runs (VmHWM), the median run time, and the bytes of the weights it loaded (the graphs' initializers). Settings:
- default: what onnxruntime does unasked (CPU arena, memory pattern, weight prepacking);
- caeav: the session options `caeav.runtime.session_ort` uses (`CPU_SESSION_SETTINGS`);
- and each of those switches on its own, to show which one buys what.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

SETTINGS = {
    "default": {},
    "no-arena": {"enable_cpu_mem_arena": False},
    "no-mem-pattern": {"enable_mem_pattern": False},
    "no-prepack": {"config": {"session.disable_prepacking": "1"}},
    "no-arena+no-pattern": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
    "caeav": None,  # caeav.runtime.session_ort's own choice
}

CHILD = r"""
import json, sys, time
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
from ort_profile import random_feeds
from caeav.runtime.bundle import Bundle
from caeav.runtime import session_ort
import onnxruntime as ort

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

setting = json.loads({setting!r})
bundle = Bundle.load({bundle!r})
sessions = {{}}
for name in bundle.chain:
    spec = bundle.graph(name, {precision!r})
    if setting is None:
        sess = session_ort.OrtSession(bundle.path / spec.file, providers=["CPUExecutionProvider"], threads={threads})
        sessions[name] = sess.session
        continue
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = {threads}
    for key, value in setting.items():
        if key == "config":
            for k, v in value.items():
                opts.add_session_config_entry(k, v)
        else:
            setattr(opts, key, value)
    sessions[name] = ort.InferenceSession(str(bundle.path / spec.file), sess_options=opts,
                                          providers=["CPUExecutionProvider"])
loaded = hwm()
inputs = {{name: random_feeds(s, bundle.segments, {batch}) for name, s in sessions.items()}}
times = []
for _ in range({runs}):
    t0 = time.perf_counter()
    for name, s in sessions.items():
        s.run(None, inputs[name])
    times.append(time.perf_counter() - t0)
print(json.dumps({{"loaded_mb": loaded, "peak_mb": hwm(), "times_s": times}}))
"""


def weight_bytes(bundle: Path, precision: str) -> int:
    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from caeav.runtime.bundle import Bundle

    b, total = Bundle.load(bundle), 0
    for name in b.chain:
        model = onnx.load(str(b.path / b.graph(name, precision).file))
        total += sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="clips per run")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    args = ap.parse_args(argv)
    root = str(Path(__file__).resolve().parents[1])
    weights = weight_bytes(args.bundle, args.precision) / 2**20
    print(f"{args.bundle} {args.precision}: weights {weights:,.0f} MiB; batch {args.batch}, {args.threads} threads, "
          f"{args.runs} runs")
    print(f"{'setting':16s} {'loaded MiB':>11s} {'peak MiB':>9s} {'peak/weights':>13s} {'median s':>9s}")
    for name in args.settings.split(","):
        code = CHILD.format(root=root, setting=json.dumps(SETTINGS[name]), bundle=str(args.bundle),
                            precision=args.precision, threads=args.threads, runs=args.runs, batch=args.batch)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode:
            print(f"{name:16s} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        got = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:16s} {got['loaded_mb']:11,.0f} {got['peak_mb']:9,.0f} {got['peak_mb'] / weights:12.2f}x "
              f"{statistics.median(got['times_s']):9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
