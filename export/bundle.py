"""`export_bundle`: a PyTorch CAE-AV model -> a deployable bundle directory (bundle contract, decisions D9/D10).

Order of work, all inside `<out>.tmp-<pid>` (`caeav.files.staged_dir`): the four FP32 graphs, `empty_caption.npy`, `postprocess.json`, the
pre-flight against TensorRT's operator matrix, the precision variants (`*.fp16.onnx`, `*.int8.onnx`,
`*.int8cpu.onnx`), and
`manifest.json` last. Then the directory is renamed onto `<out>` (an older bundle there is moved aside first and
deleted after). An export that fails or is interrupted removes its temporary directory; one that is killed leaves
`<out>.tmp-<pid>` without a manifest, which no reader takes for a bundle. TensorRT engines (`--engine trt`) are
built into the finished bundle afterwards, so a missing TensorRT leaves the ONNX bundle intact.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from caeav.files import staged_dir
from caeav.errors import ExportError
from caeav.export.dedup import dedupe_file
from caeav.export.manifest import FORMAT, MANIFEST, graph_entry, sha256_file, write_json_atomic
from caeav.runtime.bundle import ORT_ONLY_PRECISIONS, PRECISIONS  # one list of precisions for export and runtime

TOLERANCES = {"fp32": {"max_abs": 1e-4}, "fp16": {"cosine": 0.999, "agreement": 0.99}, "int8": {"cosine": 0.99},
              "int8cpu": {"cosine": 0.99, "agreement": 0.99}}
# The encoder (and AVVP's R(2+1)D-18 stream, ~0.4 TFLOP per clip) hold nearly all the compute; the others stay FP32 in
# an int8 bundle. (quantize_int8 calibrates one sample of axis 0 at a time, which the head's mixed B / B·T inputs do
# not allow.)
INT8_GRAPHS = ("st_stream", "encoder")
DEFAULT_BATCH = (1, 2, 8)


def _versions() -> dict:
    import onnx
    import onnxruntime

    try:
        import tensorrt  # noqa: F401

        trt = tensorrt.__version__
    except ImportError:
        trt = None
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "tensorrt": trt}


@torch.no_grad()
def empty_caption_features(tower, context_length: int) -> np.ndarray:
    """float32 `[77, D]`: the text tower's features of the empty caption "" (runtime fallback)."""
    from caeav.model.text_tower import tokenize

    return tower(tokenize("", context_length)).squeeze(0).float().numpy()


def _flops(cfg, log) -> Optional[dict]:
    """The manifest's "flops": FLOPs per clip of each graph (`caeav.export.graph_flops`, read by `caeav bench`)."""
    from caeav.export.graph_flops import bundle_flops

    return bundle_flops(cfg, log)


def postprocess_info(model) -> dict:
    """What the runtime needs to turn head outputs into events (`postprocess.json`)."""
    from caeav.export.graphs import head_output_names

    cfg = model.cfg
    task = cfg.task.name
    info = {"task": task, "segments": int(cfg.task.segments), "segment_seconds": 1.0,
            "sample_rate": int(cfg.frontend.sample_rate), "image_size": int(cfg.task.input_size),
            "outputs": list(head_output_names(model))}
    if task == "ave":
        from caeav.data.annotations import load_ave_categories

        info.update(classes=list(load_ave_categories()), background=28,
                    rule="caeav.model.heads.postprocess.ave_predict: label = argmax(event) where is_event > 0, "
                         "else 28 (background); MLP head: argmax(segment_logits)")
    elif task == "avvp":
        from caeav.data.annotations.llp import LLP_CLASSES

        info.update(classes=list(LLP_CLASSES), threshold=0.5,
                    rule="caeav.model.heads.postprocess_avvp.avvp_predict")
        if getattr(model, "st_stream", None) is not None:  # how the runtime samples the stream's frames
            from caeav.media.st_frames import STSampling

            info["st_sampling"] = STSampling.from_config(cfg.st).to_dict()
    elif task == "avqa":
        from caeav.data.annotations import load_avqa_vocab
        from caeav.data.questions import PAD, QUESTION_LENGTH

        vocab = load_avqa_vocab()  # the question tokeniser travels with the model (caeav.runtime.question)
        info.update(answers=list(vocab.answers), question_vocab=list(vocab.questions), question_length=QUESTION_LENGTH,
                    question_pad=PAD, question_pads=str(model.head.question_encoder.pads),
                    tokeniser="caeav.data.questions: ids end-padded with question_pad to question_length; the head "
                              "graph applies question_pads itself",
                    rule="caeav.model.heads.postprocess.avqa_predict: argmax(answer)")
    else:
        info.update(threshold_logit=0.0, mask_size=int(model.head.mask_size),
                    rule="caeav.model.heads.postprocess_avs.avs_predict: pixel = logit > 0")
    return info


def _int8_variants(tmp: Path, calib: dict, fallback: Callable[[], dict], graphs: dict, log) -> list[str]:
    """Quantise `INT8_GRAPHS` on `calib`; a graph whose inputs `calib` lacks (AVVP's stream, calibrated from a dataset
    root without videos) uses `fallback()`'s sample inputs. Returns the names of those graphs."""
    try:
        from caeav.calibration import quantize_int8
    except ImportError as err:
        raise ExportError(f"int8 needs caeav.calibration.quantize_int8 ({err})") from err
    import onnx

    sampled = []
    for name in INT8_GRAPHS:
        if name not in graphs:
            continue
        log(f"int8: quantising {name}")
        inputs = [i.name for i in onnx.load(str(tmp / f"{name}.onnx"), load_external_data=False).graph.input]
        feeds = calib
        if any(k not in calib for k in inputs):
            log(f"int8: the calibration clips give no {', '.join(k for k in inputs if k not in calib)}; "
                f"{name} is calibrated on sample inputs")
            feeds, sampled = fallback(), sampled + [name]
        quantize_int8(tmp / f"{name}.onnx", {k: feeds[k] for k in inputs}, tmp / f"{name}.int8.onnx")
        dedupe_file(tmp / f"{name}.int8.onnx")  # one copy per weight (the quantiser gives one per consumer)
        graphs[f"{name}.int8"] = graph_entry(tmp, f"{name}.int8.onnx", "int8")
    return sampled


def _int8cpu_variants(tmp: Path, graphs: dict, log) -> None:
    """onnxruntime-native INT8 of `INT8_GRAPHS` for the CPU provider (`caeav.calibration.ort_int8`; no calibration)."""
    from caeav.calibration.ort_int8 import quantize_int8_cpu

    for name in INT8_GRAPHS:
        if name in graphs:
            log(f"int8cpu: quantising {name} (onnxruntime dynamic quantisation)")
            quantize_int8_cpu(tmp / f"{name}.onnx", tmp / f"{name}.int8cpu.onnx")
            dedupe_file(tmp / f"{name}.int8cpu.onnx")
            graphs[f"{name}.int8cpu"] = graph_entry(tmp, f"{name}.int8cpu.onnx", "int8cpu")


def export_bundle(model, tower, out, *, source: dict, precisions: Sequence[str] = ("fp32",),
                  batch: Sequence[int] = DEFAULT_BATCH, calib: Optional[dict] = None, seed: int = 0,
                  opset: int = 18, checkpoint=None, log: Callable[[str], None] = lambda s: None) -> Path:
    """Export `model` (eval mode) and the caption `tower` into the bundle directory `out`; returns its path.

    `precisions`: "fp32" always, plus any of "fp16", "int8" (Q/DQ, for TensorRT) and "int8cpu" (onnxruntime's CPU
    provider). `batch`: (min, opt, max) of the TensorRT profile, also
    the batch sizes the parity checks run. `checkpoint`: a caeav checkpoint directory whose inference files are copied
    into the bundle's `checkpoint/` (checksummed like the graphs; `caeav parity` and `--engine torch` use it, wherever
    the bundle is moved). `calib`: INT8 calibration inputs `{"frames", "wave", ...}` (numpy); without
    it the sample inputs are used and the manifest says so. `source`: how to rebuild the model (`caeav.export.source`).
    """
    from caeav import __version__
    from caeav.export.fp16 import convert_fp16
    from caeav.export.graphs import graph_specs
    from caeav.export.inputs import sample_inputs
    from caeav.export.onnx_export import export_graph
    from caeav.export.preflight import preflight_bundle_graphs
    from caeav.export.source import text_encoder_id
    from caeav.export.tokenizer_file import write_tokenizer_file

    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        raise ExportError(f"unknown precision(s) {unknown}; choose from {', '.join(PRECISIONS)}")
    lo, opt, hi = (int(b) for b in batch)
    if not 1 <= lo <= opt <= hi:
        raise ExportError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {lo}:{opt}:{hi}")
    cfg = model.cfg
    model.eval()
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not a caeav bundle; choose another --out")
    with staged_dir(out) as tmp:
        st_dim = int(getattr(model.head, "st_dim", 0) or 0) if cfg.task.name == "avvp" else 0
        feeds = sample_inputs(cfg, max(2, min(opt, 4)), seed, st_dim=st_dim)
        graphs = {}
        specs = graph_specs(model, tower, feeds)
        for spec in specs:
            log(f"exporting {spec.name}")
            export_graph(spec, tmp / f"{spec.name}.onnx", int(cfg.task.segments), opset)
            graphs[spec.name] = graph_entry(tmp, f"{spec.name}.onnx", "fp32")
        extra_files = ["postprocess.json"]
        if tower is not None:  # None: the AVMoE baseline reads no captions
            np.save(tmp / "empty_caption.npy", empty_caption_features(tower, cfg.caption.context_length))
            extra_files.insert(0, "empty_caption.npy")
            extra_files.append(write_tokenizer_file(tmp, tower))  # the runtime's caption tokeniser
        write_json_atomic(tmp / "postprocess.json", postprocess_info(model))
        log("pre-flight against the TensorRT ONNX operator matrix")
        preflight_bundle_graphs(tmp, [g["file"] for g in graphs.values()])
        if "fp16" in precisions:
            for spec in specs:
                log(f"fp16: converting {spec.name}")
                convert_fp16(tmp / f"{spec.name}.onnx", tmp / f"{spec.name}.fp16.onnx", spec.example, log=log,
                             segments=int(cfg.task.segments))
                dedupe_file(tmp / f"{spec.name}.fp16.onnx")  # one copy per weight (AutoCast gives one per consumer)
                graphs[f"{spec.name}.fp16"] = graph_entry(tmp, f"{spec.name}.fp16.onnx", "fp16")
        calibration = None
        if "int8" in precisions:
            sample = lambda: sample_inputs(cfg, 8, seed + 1, st_dim=st_dim)  # noqa: E731
            sampled = _int8_variants(tmp, calib if calib is not None else sample(), sample, graphs, log)
            calibration = "clips" if calib is not None else "sample-inputs"
            if calib is not None and sampled:
                calibration += f" ({', '.join(sampled)}: sample-inputs)"
        if "int8cpu" in precisions:
            _int8cpu_variants(tmp, graphs, log)
        # onnxruntime-only graphs (int8cpu: DynamicQuantizeLinear / MatMulInteger) get no TensorRT pre-flight
        variants = [g["file"] for g in graphs.values() if g["precision"] not in ("fp32", *ORT_ONLY_PRECISIONS)]
        if variants:
            preflight_bundle_graphs(tmp, variants)
        files = {name: {"file": name, "sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                 for name in extra_files}
        if checkpoint is not None:
            from caeav.export.source import embed_checkpoint

            files.update(embed_checkpoint(checkpoint, tmp))
        manifest = {
            "format": FORMAT, "caeav_version": __version__, "task": cfg.task.name, "config": cfg.to_dict(),
            "source": source, "segments": int(cfg.task.segments), "image_size": int(cfg.task.input_size),
            "sample_rate": int(cfg.frontend.sample_rate), "text_dim": int(cfg.caption.text_dim),
            "context_length": int(cfg.caption.context_length), "text_encoder_id": text_encoder_id(tower, cfg) if tower is not None else None,
            "opset": opset, "precisions": ["fp32"] + [p for p in PRECISIONS[1:] if p in precisions],
            "batch": {"min": lo, "opt": opt, "max": hi}, "graphs": graphs, "engines": {}, "files": files,
            "calibration": calibration, "tolerances": TOLERANCES, "parity": {}, "versions": _versions(),
            "flops": _flops(cfg, log),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json_atomic(tmp / MANIFEST, manifest)  # last: a directory without it is not a bundle
    return out
