"""Bundle manifest helpers (decisions D9, bundle contract), torch-free and onnx-optional.

* `sha256_file`, `write_json_atomic` (temp file + `os.replace`), `read_manifest`, `update_manifest` (read, change one
  key, write atomically).
* `graph_entry(bundle, file, precision)`: the manifest entry of one ONNX file: sha256, bytes, its external-data
  sidecar (if any) with its own sha256, and the named inputs/outputs with shapes and dtypes (read with `onnx`
  without loading the weights).
* `verify_bundle(bundle)`: a bundle is complete when `manifest.json` exists and every file it lists has the recorded
  size and sha256; returns the manifest or raises `BundleError` (one line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from caeav.errors import BundleError
from caeav.files import sha256_file, write_json_atomic  # noqa: F401  (re-exported for bundle readers)

MANIFEST = "manifest.json"
FORMAT = 1

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
           16: "bfloat16"}


def read_manifest(bundle) -> dict:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a complete caeav bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{path}: unreadable ({err})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r}, this caeav reads format {FORMAT}")
    return manifest


def update_manifest(bundle, change: Callable[[dict], None]) -> dict:
    """Apply `change(manifest)` and write the manifest back atomically; returns the new manifest."""
    manifest = read_manifest(bundle)
    change(manifest)
    write_json_atomic(Path(bundle) / MANIFEST, manifest)
    return manifest


def _value_info(value) -> dict:
    tt = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
    return {"name": value.name, "shape": shape, "dtype": _DTYPES.get(tt.elem_type, str(tt.elem_type))}


def _file_entry(path: Path, bundle: Path) -> dict:
    return {"file": path.relative_to(bundle).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def graph_entry(bundle, file, precision: str) -> dict:
    """Manifest entry of the ONNX graph `bundle/file` (module doc)."""
    import onnx

    bundle = Path(bundle)
    path = bundle / file
    model = onnx.load(str(path), load_external_data=False)
    sidecars = sorted({e.value for init in model.graph.initializer for e in init.external_data if e.key == "location"})
    entry = {**_file_entry(path, bundle), "precision": precision,
             "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
             "nodes": len(model.graph.node),
             "inputs": [_value_info(v) for v in model.graph.input],
             "outputs": [_value_info(v) for v in model.graph.output]}
    if sidecars:
        entry["external_data"] = [_file_entry(path.parent / s, bundle) for s in sidecars]
    return entry


def listed_files(manifest: dict) -> list[dict]:
    """Every {file, sha256, bytes} the manifest vouches for (graphs, their sidecars, engines, extra files)."""
    out = []
    for entry in manifest.get("graphs", {}).values():
        out.append(entry)
        out.extend(entry.get("external_data", []))
    out.extend(manifest.get("engines", {}).values())
    out.extend(manifest.get("files", {}).values())
    return out


def verify_bundle(bundle) -> dict:
    """The manifest of a complete bundle; `BundleError` naming the first missing or altered file."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    for entry in listed_files(manifest):
        path = bundle / entry["file"]
        if not path.is_file():
            raise BundleError(f"{bundle}: {entry['file']} is missing")
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise BundleError(f"{bundle}: {entry['file']} has {path.stat().st_size} bytes, the manifest says "
                              f"{entry['bytes']}")
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{bundle}: {entry['file']} does not match its sha256 in the manifest")
    return manifest
