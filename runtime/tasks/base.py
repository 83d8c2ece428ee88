"""What a task adapter is: the per-task half of `caeav infer` (the pipeline, windows, batching and engines are shared).

An adapter answers five questions for its task, and nothing else:

* what the task samples from the video: `sampling` (the bundle's rule) and `segments` come from the bundle; an
  adapter only says whether it needs the decoded frames kept for its outputs (`keeps_frames`);
* which extra inputs the head takes besides what the encoder and caption projector give (`extra_inputs`) and their
  values for one query (`queries`, `head_feeds`: AVQA asks one head call per question, every other task one);
* how the raw head outputs of a video's windows become a result (`finish` -> a dict whose keys, except "arrays",
  go into the JSON video entry, `to_json`);
* how that result renders: `table` (rich renderable for the terminal), `write_files` (AVS masks and overlays),
  `figure_rows` and `tint` (the rows under the filmstrip in `--plot`, and what is drawn over its frames; see
  `caeav.runtime.plot`), `bench_labels` / `bench_feeds` (what `caeav bench` compares and feeds);
* which command-line options it accepts (`check_options` -> a one-line `CaeavError` for one it cannot honour, or
  for a required one that is missing, such as AVQA's question), and which head outputs it reads (`output_sets`,
  checked against the bundle's head graph when the bundle is loaded: `check_bundle`).

Adapters are found by `caeav.runtime.tasks.adapter_for(task)`; a module in this package that defines `ADAPTER` is
registered automatically, so adding a task is adding a module.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from caeav.errors import BundleError, CaeavError

# Output options that only some tasks honour: option -> (the flag users typed, the tasks' family name).
TASK_OPTIONS = {"masks": ("--masks", "AVS"), "overlay": ("--overlay", "AVS"), "questions": ("--question", "AVQA"),
                "questions_file": ("--questions", "AVQA")}
# Head inputs that a bundle may declare but `caeav infer` cannot compute from a video, and what to do about them.
UNSUPPORTED_INPUTS = {"st": "an AVVP head with R(2+1)D features but no st_stream graph, exported before caeav computed "
                             "the stream: re-export it"}


class TaskAdapter:
    tasks: tuple[str, ...] = ()  # the bundle tasks this adapter serves
    family: str = ""  # the name users know (AVE, AVVP, AVS, AVQA)
    extra_inputs: tuple[str, ...] = ()  # head inputs that come from the adapter, not from the encoder
    options: tuple[str, ...] = ()  # keys of TASK_OPTIONS this task accepts
    keeps_frames: bool = False  # decoded RGB frames are needed by `finish` (besides --plot)
    output_sets: tuple[tuple[str, ...], ...] = ()  # head outputs `finish` reads: any one of these sets suffices
    agreement: str = "labels"  # what `bench_labels` compares, in the bench table's footnote

    # -------------------------------------------------------------------------------------------- checks

    def check_bundle(self, bundle) -> None:
        """One-line BundleError when the bundle's graphs do not fit this task: a head output `finish` reads is
        missing (a hand-edited manifest task, say) or a head input is neither computed by the encoder / caption
        projector nor fed by this adapter."""
        head = bundle.graph("head")
        outputs = head.output_names
        if self.output_sets and outputs and not any(set(s) <= set(outputs) for s in self.output_sets):
            need = " or ".join(", ".join(s) for s in self.output_sets)
            raise BundleError(f"{bundle.path}: the manifest says task {bundle.task!r}, but its head graph outputs "
                              f"{', '.join(outputs)}; a {self.family} head gives {need} (was the manifest edited? "
                              "re-export the bundle)")
        computed = set(self.extra_inputs)
        for name in bundle.chain:
            if name != "head":
                computed.update(bundle.graph(name).output_names)
        missing = [n for n in head.input_names if n not in computed]
        if missing:
            why = "; ".join(UNSUPPORTED_INPUTS[n] for n in missing if n in UNSUPPORTED_INPUTS)
            raise BundleError(f"{bundle.path}: the head graph also needs {', '.join(missing)}, which `caeav infer` "
                              f"cannot compute from a video" + (f" ({why})" if why else ""))

    def check_options(self, bundle, options) -> None:
        """One-line CaeavError for an output option this task cannot honour (module docstring). An adapter that
        needs an option (AVQA: a question) overrides this, calls it, and says what to pass."""
        for key, (flag, family) in TASK_OPTIONS.items():
            if getattr(options, key, None) and key not in self.options:
                raise CaeavError(f"{flag} is for {family} bundles; {bundle.path} is {article(self.family)} "
                                 f"{self.family} bundle (task {bundle.task!r})")

    # -------------------------------------------------------------------------------------------- inference

    def queries(self, bundle, options, path: str) -> tuple[list, list]:
        """(queries, warnings) for one video: one head call per query. Default: a single query (None)."""
        return [None], []

    def head_feeds(self, bundle, query) -> Optional[dict]:
        """Extra head inputs for one query (no batch axis); None = do not run the head for it (e.g. no known word)."""
        return {}

    def finish(self, bundle, video, outputs: Sequence[Sequence[Optional[dict]]]) -> dict:
        """The task's result for one video. outputs[w][q]: the head outputs (no batch axis) of window w and query
        q, or None for a query that was not run. `video` is the pipeline's decoded video
        (`caeav.runtime.decoding.Decoded`: starts, seconds, duration, frame_times, size, queries, ...)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- rendering

    def to_json(self, result) -> dict:
        """The task's fields of the JSON video entry (`caeav.runtime.results`): the timeline without "arrays"."""
        return {k: v for k, v in result.timeline.items() if k != "arrays"}

    def table(self, result) -> Any:
        """A rich renderable (or a list of them) for the terminal."""
        raise NotImplementedError

    def write_files(self, result, options, bundle, single: bool = True) -> list[str]:
        """Write the task's own files for one video (AVS masks, overlays) as soon as it is finished; returns notes.
        `single`: the run has one video (an output file name is then used as given). Default: none."""
        return []

    def figure_rows(self, result, bundle) -> list:
        """Rows under the filmstrip of `--plot` (see `caeav.runtime.rows`: Lane, Bars, Ranking, Text)."""
        return []

    def tint(self, result, time: float, rgb: np.ndarray) -> np.ndarray:
        """The filmstrip image of the frame sampled at `time` (uint8 [h, w, 3]); AVS draws its mask. Default: as is."""
        return rgb

    def bench_labels(self, bundle, outputs: dict) -> np.ndarray:
        """What `caeav bench` compares between engines (labels, pixels, answers), as one array per batch item."""
        raise NotImplementedError

    def bench_feeds(self, bundle) -> dict:
        """Extra head inputs `caeav bench` runs with (batch axis of 1)."""
        return {}


def article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"
