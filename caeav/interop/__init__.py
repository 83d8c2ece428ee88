"""Checkpoints of the authors' research code (JingVIPLab/CAE-AV, yingchengy/AVMOE) in and out of caeav (issue 19).

    from caeav.interop import import_official, export_official
    report = import_official("best_ave.pt", "ave", "runs/ave-authors")          # → a caeav checkpoint directory
    export_official("runs/ave-authors", "back.pt")                             # → their state-dict format

Modules: `reader` (safe loading), `rules` (the name-rule engine), `common` + `ave`/`avvp`/`avqa`/`avs` (the
mapping tables, as data), `transforms` (the few real layout changes and recomputed tables), `options` (shape
options read off the tensors), `mapping` (tables applied both ways, strictness), `convert` (the two commands).
"""

from caeav.interop.convert import export_official, import_official  # noqa: F401
