"""Parity of a bundle against PyTorch (`caeav parity`): the same inputs through the PyTorch model the bundle was
exported from and through its graphs (onnxruntime CPU) or engines (TensorRT), for every precision in the bundle and
every batch size of its profile (min, 2, opt, max).

Per graph, each graph gets the PyTorch inputs of its stage (so an error is pinned to one graph) and Polygraphy's
comparator judges FP32 outputs elementwise (|a - b| <= atol + rtol·|b|). End to end, the ONNX chain
caption_projector -> encoder -> head is compared with `CAEAV.forward`: max/mean absolute error and cosine of every
head output, and agreement of the task's predictions, computed with the numpy rules the runtime uses
(`task_predictions`): AVE segment labels, AVVP events (per class and segment), AVQA answers (argmax: the share of
questions answered identically), AVS mask pixels (logit > 0: the share of pixels of every predicted mask that
are the same). The record names what was compared (`agreement_of`) and how many (`agreeing` of `compared`, summed
over the inputs); `agreement` is the worst input's share.

Pass criteria (the manifest's `tolerances`): fp32: head outputs max abs error <= max_abs (except clips whose
error is proven to be a CASE top-K near-tie flipping, `caeav.export.parity_ties`), predictions identical,
Polygraphy passes per graph; fp16: cosine of the encoder features >= cosine and prediction agreement >= agreement;
int8: cosine of the encoder features >= cosine (agreement reported). Results go to the manifest's "parity".
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable

import numpy as np

from caeav.errors import ExportError
from caeav.runtime.bundle import ORT_ONLY_PRECISIONS
from caeav.export.parity_ties import exempt_clips, flip_hook, keep_clips, tie_exemptions, topk_gaps

POLYGRAPHY_TOL = {"atol": 1e-4, "rtol": 1e-3}
# what `agreement` counts, per task
AGREEMENT_OF = {"ave": "segment labels", "avvp": "events", "avqa": "answers", "avs_s4": "mask pixels",
                "avs_ms3": "mask pixels"}


def task_predictions(task: str, outputs: dict, segments: int) -> dict[str, np.ndarray]:
    """The runtime's numpy prediction rules on named head outputs."""
    if task == "ave":
        from caeav.model.heads.postprocess import ave_predict

        return {"labels": ave_predict(outputs)}
    if task == "avqa":
        from caeav.model.heads.postprocess import avqa_predict

        return {"answer": avqa_predict(outputs)}
    if task == "avvp":
        from caeav.model.heads.postprocess_avvp import avvp_predict_outputs

        return avvp_predict_outputs(outputs)
    from caeav.model.heads.postprocess_avs import avs_predict

    return {"masks": avs_predict(outputs["masks"], segments)}


def prediction_agreement(task: str, ref: dict, test: dict) -> dict:
    """{"agreement_of", "agreeing", "compared", "agreement", "identical"} of two `task_predictions` results."""
    agreeing = sum(int((ref[k] == test[k]).sum()) for k in ref)
    compared = sum(int(ref[k].size) for k in ref)
    share = agreeing / max(compared, 1)
    return {"agreement_of": AGREEMENT_OF.get(task, "predictions"), "agreeing": agreeing, "compared": compared,
            "agreement": share, "identical": agreeing == compared}


def _ort_runner(path: Path) -> Callable[[dict], dict]:
    """The runtime's own onnxruntime session (CPU EP), so parity judges what `caeav infer` runs."""
    from caeav.runtime.session_ort import OrtSession

    return OrtSession(path, providers=["CPUExecutionProvider"]).run


def _trt_runner(path: Path) -> Callable[[dict], dict]:
    try:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        import tensorrt  # noqa: F401
    except ImportError as err:
        raise ExportError(f"--engine trt needs TensorRT ({err.name} is not installed); use --engine ort") from None
    runner = TrtRunner(EngineFromBytes(BytesFromPath(str(path))))
    runner.activate()
    return lambda feeds: {k: np.array(v) for k, v in runner.infer(feeds).items()}


def graph_runners(bundle: Path, manifest: dict, precision: str, engine: str = "ort") -> dict:
    """{graph: run(feeds) -> outputs} for `precision`; graphs without a variant of that precision run FP32."""
    from caeav.export.graphs import GRAPH_ORDER

    graphs, engines = manifest["graphs"], manifest.get("engines", {})
    runners = {}
    for name in GRAPH_ORDER:
        if name not in graphs:
            continue
        if engine == "trt":
            entry = engines.get(f"{name}.{precision}") or engines.get(f"{name}.fp32")
            if entry is None:
                raise ExportError(f"{bundle}: no TensorRT engine for {name} ({precision}); export with --engine trt")
            runners[name] = _trt_runner(bundle / entry["file"])
        else:
            entry = graphs.get(f"{name}.{precision}", graphs[name])
            runners[name] = _ort_runner(bundle / entry["file"])
    return runners


def _polygraphy_pass(ref: dict, test: dict, name: str) -> bool:
    from polygraphy.comparator import Comparator, CompareFunc, IterationResult, RunResults
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    ref = {k: np.ascontiguousarray(v) for k, v in ref.items()}
    test = {k: np.ascontiguousarray(v) for k, v in test.items()}
    results = RunResults()
    results.append(("pytorch", [IterationResult(outputs=ref, runner_name="pytorch")]))
    results.append((f"{name}-onnx", [IterationResult(outputs=test, runner_name=f"{name}-onnx")]))
    return bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(**POLYGRAPHY_TOL)))


class _Reference:
    """The PyTorch side: per-graph outputs and the whole model's head outputs for one set of inputs."""

    def __init__(self, model, tower, head_inputs: tuple[str, ...], stream: bool = False):
        from caeav.export.graphs import CaptionProjectorGraph, EncoderGraph, HeadGraph, head_output_names

        self.model, self.tower = model, tower
        self.proj, self.enc = CaptionProjectorGraph(model), EncoderGraph(model)
        extras = tuple(n for n in head_inputs if n not in ("v", "a", "v_cap", "a_cap"))
        self.outputs = head_output_names(model)
        self.head = HeadGraph(model, self.outputs, extras)
        self.head_inputs = head_inputs
        self.stream = stream  # the bundle computes AVVP's `st` with its st_stream graph (from `st_clips`)

    def __call__(self, feeds: dict) -> tuple[dict, dict, dict, list]:
        """(per-graph outputs, `CAEAV.forward`'s head outputs, the head graph's inputs, the per-frame CASE top-K
        gaps of each top-K call). The encoder and projector outputs are captured with forward hooks during `CAEAV.forward`, so the
        backbones run once."""
        import torch

        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        seen, gaps = {}, []
        captions = self.model.case is not None  # the AVMoE baseline has no caption branch and no top-K
        hooks = [self.model.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("encoder", o))]
        if captions:
            hooks += [self.model.caption_projector.register_forward_hook(lambda m, i, o: seen.__setitem__("proj", o)),
                      self.model.case.topk.register_forward_hook(lambda m, i, o: gaps.append(topk_gaps(*i)))]
        try:
            with torch.no_grad():
                extra = {k: t[k] for k in ("question", "st_clips" if self.stream else "st") if k in t}
                full = self.model(t["frames"], t["wave"], t.get("vis_caption"), t.get("aud_caption"), **extra)
                if captions:
                    hooks.pop().remove()  # the top-K gaps of CAEAV.forward only
                per = {}
                if self.tower is not None and "tokens" in feeds:
                    per["text_encoder"] = {"features": self.tower(t["tokens"]).numpy()}
                if self.enc.resizes(feeds["frames"]):  # the graph resizes with a matrix: run it as exported
                    enc = self.enc(t["frames"], t["wave"])
                else:
                    enc = seen["encoder"]
                    enc = (enc.v, enc.a, *enc.visual_stages) if self.enc.with_stages else (enc.v, enc.a)
                names = ("v", "a") + tuple(f"stage{i}" for i in range(len(enc) - 2))
                per["encoder"] = {n: x.numpy() for n, x in zip(names, enc)}
                if captions:
                    per["caption_projector"] = {"v_cap": seen["proj"][0].numpy(), "a_cap": seen["proj"][1].numpy()}
                if self.stream:
                    per["st_stream"] = {"st": self.model.st_stream.segments(t["st_clips"]).numpy()}
                pool = {**feeds, **per["encoder"], **per.get("caption_projector", {}), **per.get("st_stream", {})}
                head_feeds = {n: pool[n] for n in self.head_inputs}
                out = self.head(*(torch.from_numpy(head_feeds[n]) for n in self.head_inputs))
                per["head"] = dict(zip(self.outputs, (o.numpy() for o in out)))
                e2e = {k: full[k].numpy() for k in self.outputs}
        finally:
            for h in hooks:
                h.remove()
        return per, e2e, head_feeds, gaps

    def head_flipped(self, head_feeds: dict, call: int, rows: np.ndarray) -> dict:
        """The PyTorch head graph on `head_feeds` with the top-K choice of `rows` flipped in its `call`-th top-K."""
        import torch

        hook = self.model.case.topk.register_forward_hook(flip_hook(call, rows))
        try:
            with torch.no_grad():
                out = self.head(*(torch.from_numpy(head_feeds[n]) for n in self.head_inputs))
        finally:
            hook.remove()
        return dict(zip(self.outputs, (o.numpy() for o in out)))


def _chain(runners: dict, feeds: dict) -> dict:
    caps = runners["caption_projector"](feeds) if "caption_projector" in runners else {}
    if "st_stream" in runners:
        caps.update(runners["st_stream"](feeds))
    enc = runners["encoder"](feeds)
    return runners["head"]({**feeds, **caps, **enc})


def _merge(acc: dict, new: dict) -> None:
    """Fold one batch's stats into the running worst case."""
    for key, value in new.items():
        if isinstance(value, dict):
            _merge(acc.setdefault(key, {}), value)
        elif key in ("clips", "tie_exempt_clips", "agreeing", "compared"):
            acc[key] = acc.get(key, 0) + value
        elif key in ("max_abs", "max_abs_checked"):
            acc[key] = max(acc.get(key, 0.0), value)
        elif key in ("cosine", "agreement"):
            acc[key] = min(acc.get(key, 1.0), value)
        elif key == "mean_abs":
            acc[key] = max(acc.get(key, 0.0), value)
        elif isinstance(value, bool):
            acc[key] = acc.get(key, True) and value
        else:
            acc[key] = value


def _input_sets(cfg, manifest, batches, seed, clips, st_dim, bundle) -> list[tuple[str, dict]]:
    from caeav.export.inputs import sample_inputs

    sets = [(f"random-b{b}", sample_inputs(cfg, b, seed + b, st_dim=st_dim)) for b in batches]
    if clips:
        from caeav.calibration import build_calib_inputs

        st = None
        if "st_stream" in manifest["graphs"]:
            from caeav.media.st_frames import STSampling

            st = STSampling.from_config(cfg.st)
        real = build_calib_inputs(clips, cfg.task.name, segments=cfg.task.segments, size=cfg.task.input_size,
                                  max_clips=manifest["batch"]["max"], st=st)
        n = len(real["frames"])
        feeds = sample_inputs(cfg, n, seed, st_dim=st_dim)
        feeds.update(real)
        if (bundle / "empty_caption.npy").is_file():  # none in an AVMoE bundle (no caption branch)
            empty = np.load(bundle / "empty_caption.npy")
            feeds.update(vis_caption=np.repeat(empty[None], n, 0), aud_caption=np.repeat(empty[None], n, 0))
        sets.append((f"clips-{n}", feeds))
    return sets


def run_parity(bundle, engine: str = "ort", clips=None, seed: int = 1, write: bool = True, checkpoint=None,
               log: Callable[[str], None] = lambda s: None) -> dict:
    """Compare the bundle with PyTorch (module doc); returns the "parity" record (also written to the manifest)."""
    from caeav.calibration.validate import compare_outputs
    from caeav.export.manifest import update_manifest, verify_bundle
    from caeav.export.source import rebuild, text_tower

    bundle = Path(bundle)
    manifest = verify_bundle(bundle)
    model, cfg = rebuild(manifest["source"], manifest["config"], bundle=bundle, checkpoint=checkpoint)
    tower = text_tower(cfg, load_weights=manifest["source"]["kind"] != "random") if cfg.uses_captions else None
    head_inputs = tuple(i["name"] for i in manifest["graphs"]["head"]["inputs"])
    st_dim = next((i["shape"][-1] for i in manifest["graphs"]["head"]["inputs"] if i["name"] == "st"), 0)
    b = manifest["batch"]
    batches = sorted({b["min"], 2, b["opt"], b["max"]})
    ref = _Reference(model, tower, head_inputs, stream="st_stream" in manifest["graphs"])
    tol = manifest["tolerances"]
    task, T = cfg.task.name, int(cfg.task.segments)
    report = {"engine": engine, "batches": batches, "inputs": [], "precisions": {}}
    references = []
    for label, feeds in _input_sets(cfg, manifest, batches, seed, clips, st_dim, bundle):
        log(f"pytorch reference: {label}")
        report["inputs"].append(label)
        references.append((feeds, *ref(feeds)))
    for precision in manifest["precisions"]:
        if engine == "trt" and precision in ORT_ONLY_PRECISIONS:  # no TensorRT engine to compare
            continue
        runners = graph_runners(bundle, manifest, precision, engine)
        acc: dict = {}
        max_abs = tol.get(precision, {}).get("max_abs", 1e-4)
        for feeds, per, e2e, head_feeds, gaps in references:
            log(f"{precision}: batch {len(feeds['frames'])}")
            stats = {"graphs": {}}
            flipped = lambda call, rows, hf=head_feeds: ref.head_flipped(hf, call, rows)  # noqa: E731
            for name, run in runners.items():
                graph_feeds = feeds if name != "head" else head_feeds
                if name == "text_encoder" and "text_encoder" not in per:
                    continue
                got = run(graph_feeds)
                stats["graphs"][name] = compare_outputs(per[name], got)
                if precision == "fp32" and engine == "ort":
                    want = per[name]
                    if name == "head":  # CASE's top-K is in this graph: a proven near-tie flip is not a failure
                        clips = len(feeds["frames"])
                        _, exempt = exempt_clips(got, want, gaps, clips, max_abs, flipped)
                        want, got = keep_clips(want, ~exempt, clips), keep_clips(got, ~exempt, clips)
                    stats["graphs"][name]["polygraphy_pass"] = (_polygraphy_pass(want, got, name)
                                                                if next(iter(got.values())).size else True)
            out = _chain(runners, feeds)
            agree = prediction_agreement(task, task_predictions(task, e2e, T), task_predictions(task, out, T))
            stats["end_to_end"] = {"outputs": compare_outputs(e2e, out), **agree}
            if precision == "fp32":
                stats["end_to_end"].update(tie_exemptions(out, e2e, gaps, len(feeds["frames"]), max_abs, flipped))
            _merge(acc, stats)
        acc["failures"] = _failures(precision, acc, tol.get(precision, {}))
        acc["passed"] = not acc["failures"]
        report["precisions"][precision] = acc
    report["passed"] = all(p["passed"] for p in report["precisions"].values())
    report["checked"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if write:
        update_manifest(bundle, lambda m: m.__setitem__("parity", report))
    return report


def _failures(precision: str, acc: dict, tol: dict) -> list[str]:
    out = []
    e2e = acc["end_to_end"]
    enc = acc["graphs"]["encoder"]
    if precision == "fp32":
        worst = e2e["max_abs_checked"]
        if worst > tol.get("max_abs", 1e-4):
            out.append(f"head outputs max abs error {worst:.3g} > {tol.get('max_abs', 1e-4):g}")
        if not e2e["identical"]:
            out.append(f"{e2e.get('agreement_of', 'predictions')} differ (agreement {e2e['agreement']:.4f})")
        bad = [g for g, s in acc["graphs"].items() if s.get("polygraphy_pass") is False]
        if bad:
            out.append(f"Polygraphy comparison failed for {', '.join(bad)}")
        return out
    cos = min(o["cosine"] for k, o in enc.items() if isinstance(o, dict) and k in ("v", "a"))
    if "cosine" in tol and cos < tol["cosine"]:
        out.append(f"encoder feature cosine {cos:.5f} < {tol['cosine']}")
    stream = acc["graphs"].get("st_stream", {}).get("st")
    if "cosine" in tol and isinstance(stream, dict) and stream["cosine"] < tol["cosine"]:
        out.append(f"R(2+1)D-18 stream feature cosine {stream['cosine']:.5f} < {tol['cosine']}")
    if "agreement" in tol and e2e["agreement"] < tol["agreement"]:
        out.append(f"agreement of {e2e.get('agreement_of', 'predictions')} {e2e['agreement']:.4f} < {tol['agreement']}")
    return out


def summary_lines(report: dict) -> list[str]:
    """A short human-readable account of a parity record."""
    lines = [f"parity ({report['engine']}, batches {report['batches']}, inputs {', '.join(report['inputs'])})"]
    for precision, r in report["precisions"].items():
        e2e = r["end_to_end"]
        worst = max(o["max_abs"] for o in e2e["outputs"].values())
        cos = min(o["cosine"] for o in r["graphs"]["encoder"].values() if isinstance(o, dict))
        status = "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"])
        counts = f" ({e2e['agreeing']:,} of {e2e['compared']:,} in all)" if "compared" in e2e else ""
        stream = r["graphs"].get("st_stream", {}).get("st")
        if isinstance(stream, dict):
            cos = min(cos, stream["cosine"])
        lines.append(f"  {precision}: head max |Δ| {worst:.3g}, {'feature' if stream else 'encoder'} cosine {cos:.6f}, "
                     f"agreement of {e2e.get('agreement_of', 'predictions')} {e2e['agreement']:.4f}{counts}  "
                     f"{status}")
        if e2e.get("tie_exempt_clips"):
            lines.append(f"    {e2e['tie_exempt_clips']} of {e2e['clips']} clips exempt from max abs (a CASE top-K "
                         f"near-tie flipped, see caeav.export.parity_ties); the other clips: max abs "
                         f"{e2e['max_abs_checked']:.3g}")
    lines.append("parity " + ("passed" if report["passed"] else "FAILED"))
    return lines
