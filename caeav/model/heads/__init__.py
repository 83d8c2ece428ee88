"""Task heads (architecture.md §7) and the registry that picks one by task."""

from __future__ import annotations


def build_head(cfg, visual_dims: list[int], audio_dim: int, visual_tokens: int):
    """The head of `cfg.task` for final visual width `visual_dims[-1]` (AVS: all stage widths) and audio width."""
    name = cfg.task.name
    if name == "ave":
        from caeav.model.heads.ave import AVEHead

        return AVEHead(visual_dims[-1], audio_dim, cfg.task)
    if name == "avvp":
        from caeav.model.heads.avvp import AVVPHead

        return AVVPHead(visual_dims[-1], audio_dim, cfg.task)
    if name == "avqa":
        from caeav.model.heads.avqa import AVQAHead

        return AVQAHead(visual_dims[-1], audio_dim, cfg.task)
    if name in ("avs_s4", "avs_ms3"):
        from caeav.model.heads.avs import AVSHead

        return AVSHead(visual_dims, audio_dim, cfg.task)
    raise ValueError(f"no head for task {name!r}")
