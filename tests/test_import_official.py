"""Issue 19: the mapping of the authors' state dicts, checked against their key/shape maps (tests/data).

For every task and variant: an authors'-format state dict with exactly the recorded keys and shapes (cheap
distinct values: an int64 row index plus a per-key offset, broadcast over the other axes, so paper-size tensors cost
no memory) is mapped to caeav; every caeav tensor must be the value of the authors' key the mapping names, the key
set must be exactly the `paper` model's (no tensor filled twice, none left empty), and the inverse mapping must
return the same dict bit for bit (dropped entries aside, which `export-official` writes back: checked below).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from caeav.config import load_config
from caeav.interop import options as opts
from caeav.interop.convert import dropped_entries, recomputed_entries, resolve_config
from caeav.interop.mapping import task_map
from caeav.model.cae_av import build_model

DATA = Path(__file__).parent / "data" / "official-state-dicts"
TASKS = {"ave": "ave", "avvp": "avvp", "avqa": "avqa", "s4": "avs_s4", "ms3": "avs_ms3"}
CASES = [(short, variant) for short in TASKS for variant in ("cae-av", "avmoe")]
CAE_AV_ONLY = ("encoder.visual_caste.", "encoder.audio_caste.", "case.", "caption_projector.")
_TARGETS: dict = {}


def official_map(short: str, variant: str) -> dict:
    with gzip.open(DATA / f"{short}-{variant}.json.gz", "rt") as fh:
        return json.load(fh)


def official_state(entries) -> dict:
    """Authors'-format state dict: key i holds i·10⁶ + row index (broadcast), int64, recorded shape."""
    state = {}
    for i, e in enumerate(entries):
        shape = e["shape"]
        if not shape:
            state[e["key"]] = torch.tensor(i * 10**6)
            continue
        rows = torch.arange(shape[0], dtype=torch.int64) + i * 10**6
        state[e["key"]] = rows.view(-1, *([1] * (len(shape) - 1))).expand(*shape)
    return state


def target_shapes(task: str, variant: str) -> dict:
    """caeav `paper` model keys → shapes; the AVMoE variant is CAE-AV without CASTE, CASE and the captions
    (what `variant=avmoe` builds); the AVVP R(2+1)D-18 stream is not in the authors' files."""
    key = (task, variant)
    if key not in _TARGETS:
        extra = ["task.num_classes=50"] if task == "avqa" else []
        cfg = load_config("paper", task, extra + [f"variant={variant.replace('-', '_')}"])
        _TARGETS[key] = {k: tuple(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}
    out = {k: s for k, s in _TARGETS[key].items() if not k.startswith("st_stream.")}
    if variant == "avmoe":  # what the baseline model builds is exactly CAE-AV without its own parts
        full = target_shapes(task, "cae-av")
        assert out == {k: s for k, s in full.items() if not k.startswith(CAE_AV_ONLY)}
    return out


@pytest.mark.parametrize("short,variant", CASES)
def test_mapping_fills_every_tensor_once_and_inverts_bit_for_bit(short, variant):
    task = TASKS[short]
    entries = official_map(short, variant)["entries"]
    official = official_state(entries)
    tm = task_map(task, variant.replace("-", "_"))
    mapped, source, dropped = tm.to_caeav(official)

    target = target_shapes(task, variant)
    assert sorted(mapped) == sorted(target)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == target
    for key, value in mapped.items():  # the value of the authors' key the mapping names
        src = official[source[key]]
        if tuple(src.shape) == tuple(value.shape):
            assert torch.equal(value, src), key
        else:  # HTS-AT's fused qkv: query, key, value are row blocks 0, 1, 2
            part = ("query", "key", "value").index(key.split(".attention.self.")[1].split(".")[0])
            assert torch.equal(value, src.chunk(3, dim=0)[part]), key
    used = set(source.values())
    dropped_keys = {k for keys in dropped.values() for k in keys}
    assert used | dropped_keys == set(official) and not used & dropped_keys

    back = tm.to_official(mapped)
    assert set(back) == set(official) - dropped_keys
    for key, value in back.items():
        assert value.dtype == official[key].dtype and torch.equal(value, official[key]), key


@pytest.mark.parametrize("short", list(TASKS))
def test_dropped_entries_are_written_back_with_their_recorded_values(short):
    """export-official restores what import drops: recomputed masks/tables equal the authors' recorded statistics,
    unused parts come back with their recorded shapes (as zeros)."""
    entries = {e["key"]: e for e in official_map(short, "cae-av")["entries"]}
    tm = task_map(TASKS[short])
    dropped = {k for k in entries if tm.drop_for(k)}
    recomputed = recomputed_entries(load_config("paper", TASKS[short]))
    packaged = {k: (s, d) for k, s, d in dropped_entries(tm.module.TASK)}
    assert set(packaged) == dropped
    assert set(recomputed) == {k for k in dropped if tm.drop_for(k).kind == "recomputed"}
    for key, value in recomputed.items():
        e = entries[key]
        assert list(value.shape) == e["shape"] and str(value.dtype) == f"torch.{e['dtype']}"
        mean, std = value.double().mean().item(), value.double().std(unbiased=False).item()
        assert mean == pytest.approx(e["mean"], rel=1e-4, abs=1e-9), key
        assert std == pytest.approx(e["std"], rel=1e-4), key
    for key in dropped - set(recomputed):
        assert list(packaged[key][0]) == entries[key]["shape"]


def test_swin_masks_equal_timm():
    from caeav.interop.transforms import shifted_window_mask

    cfg = load_config("paper", "ave")
    swin = build_model(cfg, load_weights=False).encoder.visual
    for stage in (0, 1):
        mask = swin.layers[stage].blocks[1].attn_mask
        assert torch.equal(shifted_window_mask(48 >> stage, 12, 6), mask.reshape(-1, 144, 144))


@pytest.mark.parametrize("short", list(TASKS))
def test_shape_options_are_read_off_the_tensors_and_agree_with_the_task(short):
    task = TASKS[short]
    official = {e["key"]: torch.empty(e["shape"], device="meta")
                for e in official_map(short, "cae-av")["entries"]}
    tm = task_map(task)
    cfg, set_here = resolve_config(official, tm, "paper", [])
    shapes = {k: tuple(v.shape) for k, v in official.items()}
    inferred = dict((o, v) for o, v, _ in opts.adapter_options(shapes, *tm.module.ADAPTERS))
    assert inferred["task.avmoe.num_cma"] == cfg.task.avmoe.num_cma
    assert inferred["adapter positions"] == opts.positions_for(cfg)
    if short == "avqa":
        assert cfg.task.num_classes == 50 and cfg.task.head["question_pads"] == "trailing"
    if short == "avvp":
        assert cfg.task.authors_audio_bypass is True
    if short == "s4":
        assert cfg.task.avmoe.ua_mhsa_axis == "batch" and cfg.task.avmoe.num_latent_tokens == 87
    if short == "ms3":
        assert (cfg.task.avmoe.num_cma, cfg.task.avmoe.num_ua, cfg.task.avmoe.reduction) == (2, 2, 2)
