"""Test bundles for the runtime tests (the bundle contract, .notes/bundle-contract.md).

* `toy_bundle(dir, task)`: three tiny hand-written ONNX graphs (onnx.helper, no torch) whose outputs are simple,
  known functions of the input, so windowing and post-processing can be checked exactly on long and short videos:
  AVE: is_event(t) = 10 · mean(frames of second t) (bright seconds are events; the frames are ImageNet-normalised, so
  black is negative), event = a constant favouring class `TOY_CLASS` plus sum(v_cap) on class `TOY_CAPTION_CLASS`
  (so a cached caption is visible in the output). AVVP: a_frame_prob(t, c) = σ(10 · (rms(t) -
  0.05)) for every class (loud seconds are audio events), v_frame_prob(t, c) = σ(is_event(t)), global_prob = 0.9.
  AVS (`avs_s4` / `avs_ms3`, T = 5): mask logits = 10 · channel mean of the normalised frame (bright pixels are the
  object). `toyqa`: a head with an extra per-query input, for the pipeline's query path (`toy_task_bundle`).
* `model_bundle(dir, task)`: the real `tiny` model with random weights, exported by `caeav export` when the exporter
  exists, else by torch.onnx.export of the three pieces here; a checkpoint of the same weights is saved beside it
  (for `--engine torch`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

TOY_T, TOY_SIZE, TOY_DIM = 10, 16, 8
TOY_CLASS = 3
TOY_CAPTION_CLASS = 5  # a visual caption with a positive feature sum moves the AVE toy's class here
TOY_AVS_T = 5  # AVS toys have AVSBench's 5 segments
TOY_Q = 4  # width of the toyqa question input and answer output


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def io(name: str, shape: list) -> dict:
    return {"name": name, "shape": shape, "dtype": "float32"}


def write_manifest(root: Path, task: str, graphs: dict, segments: int, size: int, text_dim: int,
                   class_names: list, extra: dict | None = None, post: dict | None = None) -> dict:
    """graphs: name -> (file, inputs, outputs) for fp32 graphs already written in `root`."""
    np.save(root / "empty_caption.npy", np.zeros((77, text_dim), np.float32))
    (root / "postprocess.json").write_text(json.dumps({"task": task, "class_names": class_names,
                                                       "segments": segments, "segment_seconds": 1.0, **(post or {})}))
    manifest = {
        "format": 1, "caeav_version": "test", "task": task, "config": {}, "segments": segments, "image_size": size,
        "sample_rate": 32000, "text_dim": text_dim, "context_length": 77, "opset": 18, "precisions": ["fp32"],
        "batch": {"min": 1, "opt": 2, "max": 4},
        "graphs": {name: {"file": f, "precision": "fp32", "sha256": sha(root / f), "bytes": (root / f).stat().st_size,
                          "inputs": ins, "outputs": outs} for name, (f, ins, outs) in graphs.items()},
        "files": {f: {"sha256": sha(root / f)} for f in ("empty_caption.npy", "postprocess.json")},
        "engines": {}, "tolerances": {}, "parity": {}, "versions": {}, "created": "2026-01-01T00:00:00",
    }
    manifest.update(extra or {})
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _save(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _vi(name: str, shape: list, elem: int = 1):
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)  # 1 = FLOAT, 7 = INT64


def _const(name: str, value):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _spec(value_infos) -> list:
    return [io(x.name, [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim]) for x in value_infos]


def _projector(root: Path, D: int):
    """The caption projector of every toy: identity (v_cap = vis_caption, a_cap = aud_caption)."""
    from onnx import helper

    proj = helper.make_graph(
        [helper.make_node("Identity", ["vis_caption"], ["v_cap"]),
         helper.make_node("Identity", ["aud_caption"], ["a_cap"])],
        "caption_projector", [_vi("vis_caption", ["batch", 77, D]), _vi("aud_caption", ["batch", 77, D])],
        [_vi("v_cap", ["batch", 77, D]), _vi("a_cap", ["batch", 77, D])])
    _save(proj, root / "caption_projector.onnx")
    return ("caption_projector.onnx", _spec(proj.input), _spec(proj.output))


def _encoder_va() -> tuple[list, list]:
    """(nodes, initializers) of the toy encoder's v = mean of each frame, a = RMS of each second, [B·T, 1, 1]."""
    from onnx import helper

    nodes = [helper.make_node("ReduceMean", ["frames", "ax234"], ["fm"], keepdims=0),
             helper.make_node("Reshape", ["fm", "shape_bt11"], ["v"]),
             helper.make_node("Mul", ["wave", "wave"], ["w2"]),
             helper.make_node("ReduceMean", ["w2", "ax2"], ["pw"], keepdims=0),
             helper.make_node("Sqrt", ["pw"], ["rms"]),
             helper.make_node("Reshape", ["rms", "shape_bt11"], ["a"])]
    return nodes, [_const("ax234", np.array([2, 3, 4], np.int64)), _const("ax2", np.array([2], np.int64)),
                   _const("shape_bt11", np.array([-1, 1, 1], np.int64))]


def toy_bundle(root: Path, task: str = "ave") -> Path:
    """Write the toy bundle (module docstring) into `root` and return it."""
    from onnx import helper

    if task.startswith("avs") or task == "toyqa":
        return toy_task_bundle(root, task)
    root.mkdir(parents=True, exist_ok=True)
    T, S, D = TOY_T, TOY_SIZE, TOY_DIM
    vi, const = _vi, _const
    proj_spec = _projector(root, D)

    enc_nodes, enc_inits = _encoder_va()
    enc = helper.make_graph(enc_nodes, "encoder", [vi("frames", ["batch", T, 3, S, S]), vi("wave", ["batch", T, 32000])],
                            [vi("v", ["batch_t", 1, 1]), vi("a", ["batch_t", 1, 1])], initializer=enc_inits)
    _save(enc, root / "encoder.onnx")

    inputs = [vi("v", ["batch_t", 1, 1]), vi("a", ["batch_t", 1, 1]), vi("v_cap", ["batch", 77, D]),
              vi("a_cap", ["batch", 77, D])]
    common = [helper.make_node("Reshape", ["v", "shape_bt"], ["vb"]),  # [B, T]
              helper.make_node("Mul", ["vb", "ten"], ["is_event"]),
              helper.make_node("ReduceSum", ["v_cap", "ax12"], ["capsum"], keepdims=0),  # [B] (zero captions)
              helper.make_node("Unsqueeze", ["capsum", "ax1"], ["cap1"])]  # [B, 1]
    inits = [const("shape_bt", np.array([-1, T], np.int64)), const("ten", np.float32(10.0)),
             const("ax12", np.array([1, 2], np.int64)), const("ax1", np.array([1], np.int64))]
    if task == "ave":
        bias = np.full(28, -1.0, np.float32)
        bias[TOY_CLASS] = 2.0
        nodes = common + [helper.make_node("Mul", ["cap1", "onehot5"], ["capw"]),
                          helper.make_node("Add", ["capw", "bias"], ["event"]),
                          helper.make_node("Identity", ["event"], ["av_score"])]
        outputs = [vi("is_event", ["batch", T]), vi("event", ["batch", 28]), vi("av_score", ["batch", 28])]
        inits += [const("bias", bias), const("onehot5", np.eye(28, dtype=np.float32)[TOY_CAPTION_CLASS])]
        names = [f"toy class {i}" for i in range(28)]
    else:
        nodes = common + [
            helper.make_node("Reshape", ["a", "shape_bt1"], ["ab"]),  # [B, T, 1]
            helper.make_node("Sub", ["ab", "quiet"], ["ad"]),
            helper.make_node("Mul", ["ad", "ten"], ["al"]),
            helper.make_node("Sigmoid", ["al"], ["ap"]),
            helper.make_node("Expand", ["ap", "shape_1125"], ["a_frame_prob"]),
            helper.make_node("Unsqueeze", ["is_event", "ax2"], ["ve"]),
            helper.make_node("Sigmoid", ["ve"], ["vp"]),
            helper.make_node("Expand", ["vp", "shape_1125"], ["v_frame_prob"]),
            helper.make_node("Add", ["cap1", "g"], ["global_prob"]),
            helper.make_node("Identity", ["global_prob"], ["a_prob"]),
            helper.make_node("Identity", ["global_prob"], ["v_prob"])]
        inits += [const("shape_bt1", np.array([-1, T, 1], np.int64)), const("quiet", np.float32(0.05)),
                  const("shape_1125", np.array([1, 1, 25], np.int64)), const("ax2", np.array([2], np.int64)),
                  const("g", np.full(25, 0.9, np.float32))]
        outputs = [vi("global_prob", ["batch", 25]), vi("a_prob", ["batch", 25]), vi("v_prob", ["batch", 25]),
                   vi("a_frame_prob", ["batch", T, 25]), vi("v_frame_prob", ["batch", T, 25])]
        names = [f"toy class {i}" for i in range(25)]
    _save(helper.make_graph(nodes, "head", inputs, outputs, initializer=inits), root / "head.onnx")

    graphs = {"caption_projector": proj_spec, "encoder": ("encoder.onnx", _spec(enc.input), _spec(enc.output)),
              "head": ("head.onnx", _spec(inputs), _spec(outputs))}
    write_manifest(root, task, graphs, T, S, D, names)
    return root


def toy_task_bundle(root: Path, task: str) -> Path:
    """AVS toy (`avs_s4` / `avs_ms3`, T = TOY_AVS_T): the encoder's `stage0` is the channel mean of the normalised
    frames [B·T, 1, S, S] and the head's mask logits are 10 · stage0, so bright pixels are the sounding object.
    `toyqa` (a question-answering task for pipeline tests; its adapter lives in the tests): the head also takes
    `question` [batch, TOY_Q] float32 and answers answer[b] = question[b] + mean(v of clip b), so each query's output
    is known; T = TOY_T. Both keep the toy AVE encoder's `v` (frame means) and `a` (audio RMS)."""
    from onnx import helper

    root.mkdir(parents=True, exist_ok=True)
    T = TOY_AVS_T if task.startswith("avs") else TOY_T
    S, D = TOY_SIZE, TOY_DIM
    proj_spec = _projector(root, D)
    enc_nodes, enc_inits = _encoder_va()
    enc_out = [_vi("v", ["batch_t", 1, 1]), _vi("a", ["batch_t", 1, 1])]
    head_in = enc_out + [_vi("v_cap", ["batch", 77, D]), _vi("a_cap", ["batch", 77, D])]
    if task.startswith("avs"):
        enc_nodes += [helper.make_node("Reshape", ["frames", "shape_b3ss"], ["flat"]),
                      helper.make_node("ReduceMean", ["flat", "ax1"], ["stage0"], keepdims=1)]
        enc_inits += [_const("shape_b3ss", np.array([-1, 3, S, S], np.int64)), _const("ax1", np.array([1], np.int64))]
        enc_out += [_vi("stage0", ["batch_t", 1, S, S])]
        head_in += [_vi("stage0", ["batch_t", 1, S, S])]
        head_nodes = [helper.make_node("Mul", ["stage0", "ten"], ["masks"])]
        head_inits = [_const("ten", np.float32(10.0))]
        head_out = [_vi("masks", ["batch_t", 1, S, S])]
        post = {"threshold_logit": 0.0, "mask_size": S}
    else:
        head_in += [_vi("question", ["batch", TOY_Q])]
        head_nodes = [helper.make_node("Reshape", ["v", "shape_bt"], ["vb"]),
                      helper.make_node("ReduceMean", ["vb", "ax1"], ["vm"], keepdims=1),  # [B, 1]
                      helper.make_node("Add", ["question", "vm"], ["answer"])]
        head_inits = [_const("shape_bt", np.array([-1, T], np.int64)), _const("ax1", np.array([1], np.int64))]
        head_out = [_vi("answer", ["batch", TOY_Q])]
        post = {"sampling": "linspace"}
    enc = helper.make_graph(enc_nodes, "encoder", [_vi("frames", ["batch", T, 3, S, S]), _vi("wave", ["batch", T, 32000])],
                            enc_out, initializer=enc_inits)
    _save(enc, root / "encoder.onnx")
    head = helper.make_graph(head_nodes, "head", head_in, head_out, initializer=head_inits)
    _save(head, root / "head.onnx")
    graphs = {"caption_projector": proj_spec, "encoder": ("encoder.onnx", _spec(enc.input), _spec(enc.output)),
              "head": ("head.onnx", _spec(head.input), _spec(head.output))}
    write_manifest(root, task, graphs, T, S, D, [], post=post)
    return root


def exporter_available() -> bool:
    """True once `caeav export` exists (the export helper's `caeav.export` behind the CLI)."""
    import typer.main

    from caeav.cli.main import app

    return "export" in getattr(typer.main.get_command(app), "commands", {})


def model_bundle(root: Path, task: str = "ave", seed: int = 0) -> tuple[Path, Path | None]:
    """(bundle dir, checkpoint dir or None) of the `tiny` model with random weights (module docstring). Either way
    the manifest's `source` says where the weights came from, so `--engine torch` can rebuild the model."""
    root.mkdir(parents=True, exist_ok=True)
    bundle = root / "bundle"
    if exporter_available():
        from caeav.cli.main import main

        code = main(["export", "--config", "tiny", "--random-weights", "--task", task, "--engine", "onnx",
                     "--precision", "fp32", "--out", str(bundle)])
        assert code == 0, "caeav export failed"
        return bundle, None
    import torch

    from caeav.config import load_config
    from caeav.model.cae_av import build_model
    from caeav.model.checkpoint import save_checkpoint

    cfg = load_config("tiny", task)
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(model, cfg, root / "checkpoint")
    _torch_export(model, cfg, bundle, {"kind": "checkpoint", "path": str(ckpt.resolve())})
    return bundle, ckpt


def _torch_export(model, cfg, root: Path, source: dict) -> None:
    """The three graphs of the contract with torch.onnx.export (TorchScript exporter: fast enough for tests)."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    T, S, D = cfg.task.segments, cfg.task.input_size, cfg.caption.text_dim

    class Projector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = model.caption_projector

        def forward(self, vis_caption, aud_caption):
            return self.p(vis_caption, aud_caption)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = model.encoder

        def forward(self, frames, wave):
            out = self.e(frames, wave)
            return out.v, out.a

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, v, a, v_cap, a_cap):
            v, a, _ = self.m.case(v, a, v_cap, a_cap, T)
            v = self.m.encoder.visual_norm(v)
            out = self.m._head(v, v.mean(dim=1).unflatten(0, (-1, T)), a.mean(dim=1).unflatten(0, (-1, T)), None, {})
            return tuple(out[k] for k in names)

    B = 2
    with torch.no_grad():
        frames, wave = torch.randn(B, T, 3, S, S), 0.1 * torch.randn(B, T, 32000)
        cap = torch.randn(B, 77, D)
        v, a = Encoder()(frames, wave)
        v_cap, a_cap = Projector()(cap, cap)
        outs = model._head(*(lambda vv, aa: (vv, vv.mean(1).unflatten(0, (-1, T)),
                                             aa.mean(1).unflatten(0, (-1, T))))(*model.case(v, a, v_cap, a_cap, T)[:2]),
                           None, {})
    names = [k for k in outs if k not in ("aud_cls", "vis_cls")]
    specs = {
        "caption_projector": (Projector(), (cap, cap), ["vis_caption", "aud_caption"], ["v_cap", "a_cap"]),
        "encoder": (Encoder(), (frames, wave), ["frames", "wave"], ["v", "a"]),
        "head": (Head(), (v, a, v_cap, a_cap), ["v", "a", "v_cap", "a_cap"], names),
    }
    graphs = {}
    for name, (module, args, ins, outs_) in specs.items():
        axes = {n: {0: "batch_t" if n in ("v", "a") else "batch"} for n in ins + outs_}
        if name == "head":  # the TorchScript exporter bakes the batch size into CASE's reshapes
            batch = torch.export.Dim("batch", min=1, max=8)
            dims = {"v": {0: batch * T}, "a": {0: batch * T}, "v_cap": {0: batch}, "a_cap": {0: batch}}
            torch.onnx.export(module.eval(), args, str(root / f"{name}.onnx"), input_names=ins, output_names=outs_,
                              dynamic_shapes=dims, opset_version=18, dynamo=True, external_data=False)
        else:
            torch.onnx.export(module.eval(), args, str(root / f"{name}.onnx"), input_names=ins, output_names=outs_,
                              dynamic_axes=axes, opset_version=18, dynamo=False)
        with torch.no_grad():
            results = module(*args)
        shapes = lambda xs, ns: [io(n, [axes[n][0]] + list(x.shape[1:])) for n, x in zip(ns, xs)]  # noqa: E731
        graphs[name] = (f"{name}.onnx", shapes(args, ins), shapes(results, outs_))
    from caeav.data.annotations.ave import load_ave_categories
    from caeav.data.annotations.llp import LLP_CLASSES

    classes = list(load_ave_categories()) if cfg.task.name == "ave" else list(LLP_CLASSES)
    write_manifest(root, cfg.task.name, graphs, T, S, D, classes,
                   {"config": cfg.to_dict(), "batch": {"min": 1, "opt": 2, "max": 8}, "source": source})
