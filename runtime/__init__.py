"""caeav.runtime: run an export bundle on videos without PyTorch (numpy, onnxruntime or TensorRT, PyAV).

    from caeav.runtime import Pipeline, InferOptions
    report = Pipeline("bundle/", InferOptions(engine="ort", captions="none")).run(["clip.mp4"])
    report.results[0].timeline["events"]

Modules: `bundle` (manifest, checksums, task), `tasks` (one adapter per task: what it asks of the head, how outputs
become results, tables, files, figure rows), `engine` (three graphs on ort / trt / torch), `session_ort`,
`session_trt` (TensorRT via cuda-python, imported lazily), `session_torch` (`--engine torch`, imports torch lazily),
`captions` (caption cache or empty captions), `windows` (long and short videos), `decoding` (a video into windows,
truncated files), `events` (numpy post-processing of AVE/AVVP), `pipeline` (decode on threads + batched inference,
task-agnostic), `results` (JSON schema, JSON Lines as it goes), `render` (terminal), `rows` + `plot` (PNG figure),
`bench` (`caeav bench`). Nothing on this package's import path imports torch.
"""

from .bundle import Bundle, EngineSpec, GraphSpec
from .engine import LoadedModel, load_model
from .pipeline import Failure, InferOptions, InferReport, Pipeline, VideoResult, collect_videos

__all__ = ["Bundle", "EngineSpec", "Failure", "GraphSpec", "InferOptions", "InferReport", "LoadedModel", "Pipeline",
           "VideoResult", "collect_videos", "load_model"]
