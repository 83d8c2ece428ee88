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
