"""Reading an export bundle (the bundle contract; decisions D9) without torch.

    bundle = Bundle.load("bundle/", task="ave")      # BundleError (one line) for a bad manifest or the wrong task
    spec = bundle.graph("encoder", "fp16")           # GraphSpec; falls back to fp32 for a graph without that variant
    path = bundle.verified(spec.file, spec.sha256)   # sha256 checked once per file -> BundleError on mismatch
    bundle.empty_caption()                           # float32 [77, text_dim]
    bundle.postprocess                               # postprocess.json (class names, thresholds, ...)

Every file the runtime opens goes through `verified`, so a truncated or tampered graph, engine or caption array is a
clear error before onnxruntime/TensorRT sees it. Graph keys in the manifest are `<name>` (fp32) or
`<name>.<precision>`; engines are keyed `<name>.<precision>` (see `caeav.runtime.compat` for their compatibility).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

import caeav
from caeav.errors import BundleError
from caeav.export.manifest import FORMAT, MANIFEST  # the bundle contract: one definition for writer and reader
from caeav.files import sha256_file
GRAPHS = ("caption_projector", "encoder", "head")  # the chain the runtime runs (text_encoder is optional)
OPTIONAL_GRAPHS = ("st_stream",)  # run before the encoder when the bundle has them (AVVP's R(2+1)D-18 stream)
CAPTION_GRAPHS = ("text_encoder", "caption_projector")  # absent from an AVMoE-baseline bundle (no caption branch)
PRECISIONS = ("fp32", "fp16", "int8", "int8cpu")  # int8cpu: onnxruntime's CPU INT8 (caeav.calibration.ort_int8)
ORT_ONLY_PRECISIONS = ("int8cpu",)  # graphs of onnxruntime contrib ops: no TensorRT pre-flight, engine or parity
KNOWN_TASKS = ("ave", "avvp", "avqa", "avs_s4", "avs_ms3")  # the tasks `caeav infer` serves: caeav.runtime.tasks
DEFAULT_DIR = Path(caeav.__file__).resolve().parent / "assets" / "default"  # the bundled default model and clip
DEFAULT_BUNDLE, DEFAULT_SAMPLE = DEFAULT_DIR / "bundle", DEFAULT_DIR / "sample.mp4"
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle, as the manifest describes it."""

    name: str  # base name: encoder, head, ...
    key: str  # manifest key: encoder, encoder.fp16, ...
    file: str
    precision: str
    sha256: str
    inputs: tuple = ()
    outputs: tuple = ()
    data_files: tuple = ()  # (file, sha256) of external weight files next to the graph

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.outputs]


@dataclass(frozen=True)
class EngineSpec:
    """A prebuilt TensorRT engine of one graph at one precision."""

    key: str  # <graph>.<precision>
    file: str
    sha256: str
    compute_capability: str
    tensorrt: str


@dataclass
class Bundle:
    path: Path
    manifest: dict
    postprocess: dict = field(default_factory=dict)
    _verified: set = field(default_factory=set)

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: PathLike, task: Optional[str] = None) -> "Bundle":
        """Read `path/manifest.json`; BundleError for a missing/invalid bundle or one made for another task."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"{root}: no such bundle directory")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{root}: not an export bundle (no manifest.json; is the export incomplete?)")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{mpath}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else None
            raise BundleError(f"{mpath}: bundle format {got!r} is not supported (this caeav reads format {FORMAT})")
        for key in ("task", "graphs", "segments", "image_size"):
            if key not in manifest:
                raise BundleError(f"{mpath}: manifest has no {key!r} entry")
        bundle = cls(root, manifest)
        bundle.postprocess = bundle._read_postprocess()
        bundle.check_task(task)
        return bundle

    def check_task(self, task: Optional[str]) -> None:
        """BundleError unless the bundle is for `task` (None: any), a task adapter serves it, and its graphs fit
        that adapter (`TaskAdapter.check_bundle`: a hand-edited manifest task is one line here, not a KeyError)."""
        mine = self.task
        if task is not None and task != mine:
            raise BundleError(f"{self.path}: this bundle was exported for task {mine!r}, not {task!r}")
        self.adapter.check_bundle(self)

    @property
    def adapter(self):
        """The `caeav.runtime.tasks` adapter of this bundle's task (BundleError if none serves it)."""
        from .tasks import adapter_for  # the adapters import runtime modules that import this one

        return adapter_for(self.task, str(self.path))

    def _read_postprocess(self) -> dict:
        p = self.path / "postprocess.json"
        if not p.is_file():
            return {}
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{p}: unreadable ({exc})") from None
        sha = (self.manifest.get("files") or {}).get("postprocess.json", {}).get("sha256")
        if sha:
            self.verified("postprocess.json", sha)
        return data if isinstance(data, dict) else {}

    # ---------------------------------------------------------------------------------------------- fields

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def segments(self) -> int:
        return int(self.manifest["segments"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest.get("sample_rate", 32000))

    @property
    def text_dim(self) -> int:
        return int(self.manifest.get("text_dim") or self.manifest.get("config", {}).get("caption", {}).get("text_dim"))

    @property
    def context_length(self) -> int:
        return int(self.manifest.get("context_length", 77))

    @property
    def max_batch(self) -> int:
        return int((self.manifest.get("batch") or {}).get("max", 8))

    @property
    def precisions(self) -> list[str]:
        found = {g.get("precision", "fp32") for g in self.manifest["graphs"].values()}
        return [p for p in PRECISIONS if p in found]

    @property
    def sampling(self) -> str:
        """Frame sampling rule (postprocess.json, else the task's rule from caeav.media)."""
        from caeav.media import sampling_for_task

        return str(self.postprocess.get("sampling") or sampling_for_task(self.task))

    @property
    def chain(self) -> tuple[str, ...]:
        """The graphs the runtime runs for this bundle: `GRAPHS` (without the caption projector for the AVMoE
        baseline), after the optional ones it has (`st_stream`)."""
        graphs = self.manifest["graphs"]
        chain = GRAPHS if self.uses_captions else tuple(g for g in GRAPHS if g not in CAPTION_GRAPHS)
        return tuple(g for g in OPTIONAL_GRAPHS if g in graphs) + chain

    @property
    def uses_captions(self) -> bool:
        """False for a bundle of the AVMoE baseline (`variant=avmoe`): its model has no caption branch."""
        return (self.manifest.get("config") or {}).get("variant", "cae_av") != "avmoe"

    @property
    def st_sampling(self):
        """How AVVP's R(2+1)D-18 stream samples its frames (`caeav.media.st_frames.STSampling`), or None when the
        bundle has no `st_stream` graph. BundleError when it has one but postprocess.json does not say."""
        if "st_stream" not in self.manifest["graphs"]:
            return None
        from caeav.media.st_frames import STSampling

        given = self.postprocess.get("st_sampling")
        try:
            return STSampling(int(given["frames"]), float(given["fps"]), int(given["size"]),
                              tuple(float(m) for m in given["mean"]), tuple(float(s) for s in given["std"]))
        except (TypeError, KeyError, ValueError):
            raise BundleError(f"{self.path}: the bundle has an st_stream graph but postprocess.json gives no valid "
                              "st_sampling (frames, fps, size, mean, std); re-export it") from None

    @property
    def flops_per_clip(self) -> Optional[int]:
        """FLOPs one clip runs through `chain` (the manifest's "flops", recorded by `caeav export` with
        `caeav.export.graph_flops`; a graph's FP16 / INT8 variants share its figure), or None for a bundle exported
        before caeav recorded them, or one whose record lacks a graph of the chain."""
        graphs = (self.manifest.get("flops") or {}).get("graphs") or {}
        try:
            return int(sum(int(graphs[name]) for name in self.chain))
        except (KeyError, TypeError, ValueError):
            return None

    def class_names(self, count: int) -> list[str]:
        names = self.postprocess.get("class_names") or self.postprocess.get("classes") or []
        names = [str(n) for n in names][:count]
        return names + [f"class {i}" for i in range(len(names), count)]

    # ---------------------------------------------------------------------------------------------- files

    def verified(self, rel: str, sha256: Optional[str]) -> Path:
        """Path of bundle file `rel` after checking its sha256 (once per process); BundleError if it fails."""
        path = self.path / rel
        if rel in self._verified:
            return path
        if not path.is_file():
            raise BundleError(f"{self.path}: {rel} is missing from the bundle")
        if not sha256:
            raise BundleError(f"{self.path}: the manifest has no sha256 for {rel}")
        actual = sha256_file(path)
        if actual != sha256:
            raise BundleError(f"{self.path}: {rel} fails its checksum (sha256 {actual[:12]}..., manifest says "
                              f"{sha256[:12]}...); the bundle is corrupt or was modified: re-export it")
        self._verified.add(rel)
        return path

    def graph(self, name: str, precision: str = "fp32") -> GraphSpec:
        """The manifest entry of graph `name` at `precision` (fp32 when that graph has no such variant)."""
        graphs = self.manifest["graphs"]
        for p in dict.fromkeys((precision, "fp32")):
            for key in (f"{name}.{p}", name):
                entry = graphs.get(key)
                if isinstance(entry, dict) and entry.get("precision", "fp32") == p:
                    data = tuple((d["file"], d.get("sha256")) for d in entry.get("external_data", []) or [])
                    return GraphSpec(name, key, entry["file"], p, entry.get("sha256", ""),
                                     tuple(entry.get("inputs", ())), tuple(entry.get("outputs", ())), data)
        raise BundleError(f"{self.path}: the bundle has no {name!r} graph (precisions: {', '.join(self.precisions)})")

    def graph_path(self, spec: GraphSpec) -> Path:
        for rel, sha in spec.data_files:
            self.verified(rel, sha)
        return self.verified(spec.file, spec.sha256)

    def engine(self, name: str, precision: str) -> Optional[EngineSpec]:
        entry = (self.manifest.get("engines") or {}).get(f"{name}.{precision}")
        if not isinstance(entry, dict):
            return None
        return EngineSpec(f"{name}.{precision}", entry.get("file", ""), entry.get("sha256", ""),
                          str(entry.get("compute_capability", "?")), str(entry.get("tensorrt", "?")))

    def empty_caption(self) -> np.ndarray:
        """float32 [context_length, text_dim]: text-encoder features of the empty caption (zeros for a bundle that
        uses no captions: its graphs never read them)."""
        if not self.uses_captions:
            return np.zeros((self.context_length, self.text_dim), np.float32)
        sha = (self.manifest.get("files") or {}).get("empty_caption.npy", {}).get("sha256")
        path = self.verified("empty_caption.npy", sha) if sha else self.path / "empty_caption.npy"
        if not path.is_file():
            raise BundleError(f"{self.path}: empty_caption.npy is missing from the bundle")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable ({exc})") from None
        if arr.ndim != 2 or arr.shape[1] != self.text_dim:
            raise BundleError(f"{path}: expected [L, {self.text_dim}] caption features, got {list(arr.shape)}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def describe(self) -> str:
        return f"{self.path} ({self.task}, T={self.segments}, {self.image_size}px, {'/'.join(self.precisions)})"
