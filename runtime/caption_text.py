"""Caption text -> caption features S_ori [L, D] with the bundle's own text tower, torch-free.

    enc = TextEncoder(bundle)              # the bundle's tokeniser file + its `text_encoder` graph on onnxruntime
    feats = enc.encode(["a dog barks"])    # float32 [1, L, D], rounded through float16 as the caption cache stores
    raw = enc.run(enc.tokenizer(texts))    # float32 [N, L, D] straight from the graph (parity checks)

`encode` rounds through float16 because that is what `caeav captions encode` stores and the cache hands back: a clip
captioned on the fly gets the same inputs now as from the cache on the next run. The text encoder always runs its
FP32 graph (once per new caption, not per window).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from caeav.errors import BundleError

from .tokenizer import ClipTokenizer


class TextEncoder:
    """The bundle's tokeniser and `text_encoder` graph (module docstring); BundleError (one line) if it lacks them."""

    def __init__(self, bundle, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        from .session_ort import OrtSession, pick_providers

        if "text_encoder" not in bundle.manifest.get("graphs", {}):
            raise BundleError(f"{bundle.path}: the bundle has no text_encoder graph, so it cannot encode new "
                              "captions; re-export it with `caeav export`")
        self.tokenizer = ClipTokenizer.from_bundle(bundle)
        spec = bundle.graph("text_encoder", "fp32")
        shape = (spec.inputs[0].get("shape") if spec.inputs else None) or []
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != self.tokenizer.context_length:
            raise BundleError(f"{bundle.path}: the text_encoder graph reads {shape[1]} tokens, the bundle's tokeniser "
                              f"writes {self.tokenizer.context_length}; re-export the bundle")
        self.session = OrtSession(bundle.graph_path(spec), pick_providers(providers), threads)
        self.input = self.session.input_names[0]
        self.output = self.session.output_names[0]

    def run(self, tokens: np.ndarray) -> np.ndarray:
        """float32 [N, L, D] features of int64 token ids [N, L]."""
        return self.session.run({self.input: np.asarray(tokens, dtype=np.int64)})[self.output]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [N, L, D] features of `texts`, rounded through float16 (module docstring)."""
        return self.run(self.tokenizer(list(texts))).astype(np.float16).astype(np.float32)
