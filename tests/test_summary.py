"""`caeav model summary`: the paper model on the meta device, counted by component (architecture.md §10)."""

import json

import pytest

from caeav.cli.main import main
from caeav.config import load_config


@pytest.fixture(scope="module")
def paper_ave():
    from caeav.model.summary import summarize

    return summarize(load_config("paper", "ave"))


def test_paper_ave_components_match_architecture_section_10(paper_ave):
    rows = paper_ave["components"]
    assert rows["AVMoE adapters"]["trainable"] == 90_549_536
    assert rows["CASTE"]["trainable"] == 17_095_056
    assert rows["audio backbone: HTS-AT core"]["frozen"] == 27_532_824
    assert rows["caption mapper"]["trainable"] == 2_363_904
    assert rows["caption bottlenecks"]["trainable"] == 186_720
    assert rows["CASE"]["trainable"] == 78_559_234
    assert paper_ave["totals"]["trainable"] == 200_847_849
    assert paper_ave["structure"]["adapter_positions"] == 8 and paper_ave["structure"]["moe_modules"] == 32


def test_swin_backbone_count_is_what_timm_reports_for_swinv2_large(paper_ave):
    import timm
    import torch

    with torch.device("meta"):
        reference = timm.create_model("swinv2_large_window12_192", pretrained=False, num_classes=21841)
    expected = sum(p.numel() for p in reference.parameters())
    assert paper_ave["components"]["visual backbone (Swin-V2)"]["frozen"] == expected == 228_772_549


def test_total_reconciles_with_table_ii(paper_ave):
    rec = paper_ave["table_ii_reconciliation"]
    assert rec["= total as the authors count it"] == 460_945_541  # 460.9 M in Table II
    assert round(100 * rec["trainable share as the authors count it"], 2) == 43.57  # 43.5 % in Table II
    assert round(rec["= total as the authors count it"] / 1e6, 1) == 460.9


def test_paper_shapes(paper_ave):
    assert paper_ave["inputs"]["frames"]["shape"] == [2, 10, 3, 192, 192]
    assert paper_ave["inputs"]["wave"]["shape"] == [2, 10, 32000]
    assert paper_ave["outputs"]["event"]["shape"] == [2, 28]
    assert paper_ave["structure"]["visual_stages"][-1] == {"tokens": 36, "dim": 1536}
    assert paper_ave["structure"]["audio_stages"][-1] == {"tokens": 64, "dim": 768}


@pytest.mark.parametrize("task", ["avvp", "avqa", "avs_s4", "avs_ms3"])
def test_paper_model_builds_on_meta_for_every_task(task):
    from caeav.model.summary import summarize

    report = summarize(load_config("paper", task))
    assert report["structure"]["adapter_positions"] == (8 if task == "avs_ms3" else 12)
    assert report["totals"]["trainable"] > 0 and report["outputs"]


def test_cli_json(capsys):
    assert main(["model", "summary", "--config", "tiny", "--task", "avvp", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "avvp" and report["totals"]["total"] > 0


def test_cli_bad_config_is_one_line(capsys):
    assert main(["model", "summary", "--config", "huge"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config" in err[0]


# ---------------------------------------------------------------- AVS against the authors' state dict

def official_avs(task: str) -> dict:
    """tests/data/official_avs_state_dicts.json.gz: counts and adapter key -> shape of the authors' AVS model."""
    import gzip
    from pathlib import Path

    path = Path(__file__).parent / "data" / "official_avs_state_dicts.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))[task]


# authors' top-level modules -> caeav summary rows (the rest are parts caeav does not build, see summary.py)
AUTHORS_ROWS = {
    "swin": ["visual backbone (Swin-V2)"],
    "vis_caste_blocks_p1": ["CASTE"], "audio_caste_blocks_p1": ["CASTE"],
    "mapper": ["caption mapper"], "frame_adapter_v": ["caption bottlenecks"], "wav_adapter_a": ["caption bottlenecks"],
    "case": ["CASE"],
    **{f"{m}_moe_adapter_blocks_{p}": ["AVMoE adapters"] for m in ("vis", "audio") for p in ("p1", "p2")},
    **{name: [f"head: {name}"] for name in ("x1_linear_", "x2_linear_", "x3_linear_", "x4_linear_", "audio_linear",
                                            "tpavi_b1", "tpavi_b2", "tpavi_b3", "tpavi_b4", "path1", "path2",
                                            "path3", "output_conv")},
}


@pytest.fixture(scope="module", params=["avs_s4", "avs_ms3"])
def paper_avs(request):
    from caeav.model.summary import summarize

    return request.param, summarize(load_config("paper", request.param))


def test_paper_avs_components_equal_the_authors_state_dict(paper_avs):
    task, report = paper_avs
    official = official_avs(task)
    rows = report["components"]
    expected: dict = {}
    for module, names in AUTHORS_ROWS.items():
        for name in names:
            expected[name] = expected.get(name, 0) + official["components"][module]
    assert {name: rows[name]["total"] for name in expected} == expected
    assert rows["AVMoE adapters"]["total"] == {"avs_s4": 199_702_032, "avs_ms3": 111_142_016}[task]
    core = ("audio backbone: HTS-AT core", "audio backbone: final norm + tscam + head (unused)", "audio front end (bn0)")
    htsat = sum(rows[name]["total"] for name in core)
    assert htsat + 1_083_456 == official["components"]["htsat"]  # + torchlibrosa's STFT/mel "parameters"


def test_paper_avs_total_reconciles_with_the_authors_state_dict(paper_avs):
    task, report = paper_avs
    rec = report["authors_reconciliation"]
    assert "table_ii_reconciliation" not in report  # Table II is the AVE model's
    total = official_avs(task)["total_parameter_elements"]
    assert rec["= total as the authors count it"] == total == rec["authors' state dict (Pred_endecoder, train_v2.sh options)"]
    parts = [v for k, v in rec.items() if k.startswith("+ ")]
    assert rec["caeav parameters"] + sum(parts) == total
    assert rec["caeav parameters"] == report["totals"]["total"]
    assert rec["AVMoE adapters (caeav)"] == rec["AVMoE adapters (authors' state dict)"]


@pytest.mark.parametrize("task", ["avs_s4", "avs_ms3"])
def test_paper_avs_adapter_keys_and_shapes_are_the_authors(task):
    """Every authors' adapter entry (latent tokens [87, C] included) maps onto a caeav key of the same shape."""
    from caeav.model.avmoe import convert_official_state_dict
    from caeav.model.cae_av import build_model

    enc = build_model(load_config("paper", task), device="meta").encoder
    ours = {k: list(v.shape) for k, v in enc.state_dict().items() if "_moe_p" in k}
    prefixes = {f"{m}_moe_adapter_blocks_{p}.": f"{n}_moe_{p}." for m, n in (("vis", "visual"), ("audio", "audio"))
                for p in ("p1", "p2")}
    theirs = {}
    for key, shape in official_avs(task)["adapters"].items():
        old = next(p for p in prefixes if key.startswith(p))
        index, rest = key[len(old):].split(".", 1)
        (new, value), = convert_official_state_dict({rest: shape}).items()
        theirs[f"{prefixes[old]}{index}.{new}"] = value
    assert theirs == ours
    latent = [shape for key, shape in ours.items() if key.endswith(".latent")]
    assert latent and all(shape[0] == 87 for shape in latent)


def test_cli_prints_the_avs_reconciliation(capsys):
    assert main(["model", "summary", "--config", "paper", "--task", "avs_s4"]) == 0
    out = capsys.readouterr().out
    assert "reconciliation with the authors' state dict" in out and "704,167,335" in out
