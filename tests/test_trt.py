"""TensorRT engine building: naming, version branching (strong vs weak typing) and profiles through a fake `tensorrt`
module, the missing-TensorRT error, and a real build where TensorRT and a GPU are present."""

from __future__ import annotations

import json
import sys
import types

import pytest

from caeav.errors import CaeavError, ExportError
from caeav.export import trt_build, trt_runtime_check
from caeav.export.trt_build import build_engines, engine_compatible, engine_filename, profile_shapes, select_sources

T = 4


# ------------------------------------------------------------------------------------------------ a fake TensorRT

class _Tensor:
    def __init__(self, name, shape, dtype="f32"):
        self.name, self.shape, self.dtype = name, shape, dtype


class _Layer:
    def __init__(self, kind):
        self.type, self.precision, self.num_outputs, self.out_types = kind, None, 1, {}

    def get_output(self, i):
        return _Tensor("out", (), "f32")

    def set_output_type(self, i, dtype):
        self.out_types[i] = dtype


class _Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.layers = flags, [], [_Layer("NORM"), _Layer("CONV"), _Layer("SOFTMAX")]

    num_inputs = property(lambda self: len(self.inputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i):
        return self.inputs[i]

    def get_layer(self, i):
        return self.layers[i]


class _Parser:
    fail = False

    def __init__(self, network, logger):
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path):
        import onnx

        if _Parser.fail:
            self.num_errors = 1
            return False
        model = onnx.load(path)
        for vi in model.graph.input:
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
            self.network.inputs.append(_Tensor(vi.name, dims))
        self.network.path = path
        return True

    def get_error(self, i):
        return "In node 3 (Foo): unsupported op"


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)


class _Cache:
    def __init__(self, data):
        self.data = bytes(data)

    def serialize(self):
        return self.data + b"+run"


class _Config:
    def __init__(self, log):
        self.flags, self.profiles, self.log = [], [], log

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def create_timing_cache(self, data):
        self.log["cache_in"] = bytes(data)
        return _Cache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache

    def set_flag(self, flag):
        self.flags.append(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


def fake_tensorrt(version: str, weak_flags: bool = True):
    """A `tensorrt` stand-in: 11.x has no FP16/INT8 builder flags (accessing them raises AttributeError)."""
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.log = {"networks": [], "configs": []}
    mod.Logger = type("Logger", (), {"WARNING": 2, "INFO": 3, "__init__": lambda self, level=2: None})
    mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    flags = {"TF32": "TF32"}
    if weak_flags:
        flags.update(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY")
    mod.BuilderFlag = types.SimpleNamespace(**flags)
    mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    mod.LayerType = types.SimpleNamespace(NORMALIZATION="NORM", REDUCE="REDUCE", SOFTMAX="SOFTMAX",
                                          CONVOLUTION="CONV")
    mod.float32, mod.float16 = "f32", "f16"
    mod.OnnxParser = _Parser

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            net = _Network(flags)
            mod.log["networks"].append(net)
            return net

        def create_builder_config(self):
            cfg = _Config(mod.log)
            mod.log["configs"].append(cfg)
            return cfg

        def create_optimization_profile(self):
            return _Profile()

        def build_serialized_network(self, network, config):
            return json.dumps({"onnx": network.path, "flags": config.flags}).encode()

    mod.Builder = Builder
    return mod


# ------------------------------------------------------------------------------------------------ a tiny bundle

def _graph(path, inputs: dict):
    import onnx
    from onnx import TensorProto, helper

    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    first = next(iter(inputs))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", [first], ["y"])], "g", vis, [out]),
                              opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))


@pytest.fixture
def bundle(tmp_path):
    pytest.importorskip("onnx", reason="the test bundle's graphs are written with onnx")
    enc_in = {"frames": ["batch", T, 3, 8, 8], "wave": ["batch", T, 320]}
    head_in = {"v": ["batch_t", 1, 16], "a": ["batch_t", 2, 8]}
    graphs = {}
    for name, inputs, variants in (("encoder", enc_in, ("fp32", "fp16", "int8")), ("head", head_in, ("fp32", "fp16"))):
        for p in variants:
            key = name if p == "fp32" else f"{name}.{p}"
            _graph(tmp_path / f"{key}.onnx", inputs)
            graphs[key] = {"file": f"{key}.onnx", "precision": p,
                           "inputs": [{"name": n, "shape": s, "dtype": "float32"} for n, s in inputs.items()]}
    return tmp_path, {"format": 1, "segments": T, "graphs": graphs}


@pytest.fixture
def fake(monkeypatch):
    def install(version, weak_flags=True, cc=(8, 7)):
        mod = fake_tensorrt(version, weak_flags)
        monkeypatch.setitem(sys.modules, "tensorrt", mod)
        monkeypatch.setattr(trt_build, "gpu_compute_capability", lambda: cc)
        monkeypatch.setattr(trt_runtime_check, "gpu_compute_capability", lambda: cc)
        return mod
    yield install
    _Parser.fail = False


# ------------------------------------------------------------------------------------------------ no TensorRT needed

def test_engine_names_and_version_branching():
    assert engine_filename("encoder", "fp16", (8, 7), "10.3.0.30") == "encoder.fp16.sm87.trt10.3.0.engine"
    assert engine_filename("head", "int8", (9, 0), "11.4.0.106") == "head.int8.sm90.trt11.4.0.engine"
    strong = trt_runtime_check.uses_strong_typing
    assert not strong("10.3.0.30") and not strong("10.11.0") and strong("10.12.0") and strong("11.4.0.106")


def test_profile_shapes_follow_batch_and_batch_t():
    assert profile_shapes(["batch", T, 3], (1, 2, 8), T) == ((1, T, 3), (2, T, 3), (8, T, 3))
    assert profile_shapes(["batch_t", 5], (1, 2, 8), T) == ((T, 5), (2 * T, 5), (8 * T, 5))
    assert profile_shapes(["10*batch", 5], (1, 2, 3), T)[2] == (30, 5)
    with pytest.raises(ExportError, match="dynamic axis"):
        profile_shapes(["tokens", 5], (1, 2, 3), T)


def test_source_graphs_per_typing(bundle):
    _, manifest = bundle
    assert select_sources(manifest, "fp16", strong=True) == {"encoder": "encoder.fp16", "head": "head.fp16"}
    assert select_sources(manifest, "int8", strong=True) == {"encoder": "encoder.int8", "head": "head.fp16"}
    assert select_sources(manifest, "fp16", strong=False) == {"encoder": "encoder", "head": "head"}
    assert select_sources(manifest, "int8", strong=False) == {"encoder": "encoder.int8", "head": "head"}
    with pytest.raises(ExportError, match="precision"):
        select_sources(manifest, "bf16", strong=True)


def test_weak_fp16_build_on_tensorrt_10_3(bundle, fake):
    root, manifest = bundle
    trt = fake("10.3.0.30")
    entries = build_engines(root, manifest, "fp16", (1, 2, 8))
    assert set(entries) == {"encoder.fp16", "head.fp16"}
    enc = entries["encoder.fp16"]
    assert enc["file"] == "engines/encoder.fp16.sm87.trt10.3.0.engine" and enc["typing"] == "weak"
    assert enc["compute_capability"] == "8.7" and enc["tensorrt"] == "10.3.0" and enc["onnx"] == "encoder"
    plan = json.loads((root / enc["file"]).read_bytes())
    assert plan["onnx"].endswith("encoder.onnx")                 # weak FP16 builds from the FP32 graph
    assert plan["flags"] == ["FP16", "OBEY"]
    assert all(net.flags == 0 for net in trt.log["networks"])     # not strongly typed
    norm, conv, softmax = trt.log["networks"][0].layers
    assert norm.precision == "f32" and softmax.precision == "f32" and conv.precision is None
    assert norm.out_types == {0: "f32"}
    head = entries["head.fp16"]["profile"]
    assert head["v"] == {"min": [T, 1, 16], "opt": [2 * T, 1, 16], "max": [8 * T, 1, 16]}
    assert entries["encoder.fp16"]["profile"]["frames"]["max"] == [8, T, 3, 8, 8]
    assert (root / "timing.cache").read_bytes() == b"+run"
    import hashlib
    assert enc["sha256"] == hashlib.sha256((root / enc["file"]).read_bytes()).hexdigest()


def test_weak_int8_sets_int8_and_fp16(bundle, fake):
    root, manifest = bundle
    fake("10.3.0.30")
    entries = build_engines(root, manifest, "int8", (1, 1, 2))
    plan = json.loads((root / entries["encoder.int8"]["file"]).read_bytes())
    assert plan["onnx"].endswith("encoder.int8.onnx") and sorted(plan["flags"]) == ["FP16", "INT8"]


def test_strong_build_on_tensorrt_11_uses_no_precision_flags(bundle, fake):
    root, manifest = bundle
    trt = fake("11.4.0.106", weak_flags=False, cc=(9, 0))          # BuilderFlag.FP16 does not exist
    (root / "timing.cache").write_bytes(b"old")
    entries = build_engines(root, manifest, "fp16", (1, 2, 4), graphs=["encoder"])
    assert list(entries) == ["encoder.fp16"]
    entry = entries["encoder.fp16"]
    assert entry["file"] == "engines/encoder.fp16.sm90.trt11.4.0.engine" and entry["typing"] == "strong"
    plan = json.loads((root / entry["file"]).read_bytes())
    assert plan["onnx"].endswith("encoder.fp16.onnx") and plan["flags"] == []
    assert trt.log["networks"][0].flags == 1 << 1                   # STRONGLY_TYPED
    assert trt.log["cache_in"] == b"old" and (root / "timing.cache").read_bytes() == b"old+run"


def test_build_errors_are_one_line(bundle, fake):
    root, manifest = bundle
    fake("10.3.0.30")
    with pytest.raises(ExportError, match="MIN:OPT:MAX"):
        build_engines(root, manifest, "fp16", (4, 2, 8))
    with pytest.raises(ExportError, match="no ONNX graph named"):
        build_engines(root, manifest, "fp16", (1, 2, 4), graphs=["decoder"])
    _Parser.fail = True
    with pytest.raises(ExportError, match="could not parse encoder.onnx: In node 3"):
        build_engines(root, manifest, "fp16", (1, 2, 4))
    fake("8.6.1")
    with pytest.raises(ExportError, match="too old"):
        build_engines(root, manifest, "fp16", (1, 2, 4))


def test_missing_tensorrt_leaves_the_bundle_intact(bundle, monkeypatch):
    root, manifest = bundle
    monkeypatch.setitem(sys.modules, "tensorrt", None)              # import tensorrt -> ImportError
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(ExportError) as err:
        build_engines(root, manifest, "fp16", (1, 2, 8))
    assert isinstance(err.value, CaeavError) and "\n" not in str(err.value) and "TensorRT" in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == before         # no engines/, no timing.cache
    assert engine_compatible({"tensorrt": "10.3.0", "compute_capability": "8.7"}) == "TensorRT is not installed"


def test_engine_compatible_names_the_mismatch(fake):
    fake("10.3.0.30", cc=(8, 7))
    assert engine_compatible({"tensorrt": "10.3.0", "compute_capability": "8.7"}) is None
    assert "TensorRT 11.4.0" in engine_compatible({"tensorrt": "11.4.0", "compute_capability": "8.7"})
    reason = engine_compatible({"tensorrt": "10.3.0", "compute_capability": "9.0"})
    assert "9.0" in reason and "sm87" in reason


# ------------------------------------------------------------------------------------------------ real TensorRT

def test_real_tensorrt_build(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU machines with TensorRT only)")
    try:
        cc = trt_runtime_check.gpu_compute_capability()
    except ExportError as err:
        pytest.skip(f"no CUDA GPU: {err}")
    _graph(tmp_path / "encoder.onnx", {"frames": ["batch", T, 3, 8, 8]})
    manifest = {"segments": T, "graphs": {"encoder": {"file": "encoder.onnx", "precision": "fp32", "inputs": [
        {"name": "frames", "shape": ["batch", T, 3, 8, 8], "dtype": "float32"}]}}}
    for precision in ("fp32", "fp16"):
        entries = build_engines(tmp_path, manifest, precision, (1, 2, 4))
        entry = entries[f"encoder.{precision}"]
        assert entry["compute_capability"] == f"{cc[0]}.{cc[1]}"
        assert engine_compatible(entry) is None
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
            (tmp_path / entry["file"]).read_bytes())
        assert engine is not None and engine.get_tensor_profile_shape("frames", 0)[2] == (4, T, 3, 8, 8)
    assert (tmp_path / "timing.cache").stat().st_size > 0


def test_engines_command_without_tensorrt_leaves_the_bundle(capsys):
    """`caeav engines BUNDLE` (the on-device build): one line, non-zero, bundle untouched, where TensorRT is absent."""
    import importlib.util

    from caeav.cli.main import main
    from caeav.runtime.bundle import DEFAULT_BUNDLE

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the engine build itself is tested above")
    before = sorted((p.name, p.stat().st_size) for p in DEFAULT_BUNDLE.iterdir())
    assert main(["engines", str(DEFAULT_BUNDLE)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TensorRT is not installed" in err
    assert sorted((p.name, p.stat().st_size) for p in DEFAULT_BUNDLE.iterdir()) == before
