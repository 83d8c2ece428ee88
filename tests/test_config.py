import json

import pytest

from caeav.config import PRESETS, TASKS, ConfigError, ModelConfig, load_config


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("task", TASKS)
def test_every_preset_task_pair_resolves(preset, task):
    cfg = load_config(preset, task)
    assert cfg.preset == preset and cfg.task.name == task
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_task_settings_follow_the_avmoe_table():
    # architecture.md §3.3
    ave, avvp, avqa = (load_config("paper", t).task.avmoe for t in ("ave", "avvp", "avqa"))
    s4, ms3 = (load_config("paper", t).task.avmoe for t in ("avs_s4", "avs_ms3"))
    assert (ave.num_cma, ave.num_ua, ave.reduction, ave.groups, ave.num_latent_tokens, ave.skip_num) == (1, 1, 8, 2, 32, 2)
    assert ave.use_bn and ave.audio_gate and not avvp.use_bn and avvp.ua_attention == "paramfree"
    assert (avqa.num_ua, avqa.groups, avqa.num_latent_tokens, avqa.audio_gate) == (2, 4, 2, False)
    assert s4.ua_attention == "mhsa" and ms3.ua_attention == "latent" and (ms3.num_cma, ms3.reduction) == (2, 2)
    assert load_config("paper", "avs").task.segments == 5 and load_config("paper", "avs").task.name == "avs_s4"


def test_overrides_address_dotted_fields_and_parse_json():
    cfg = load_config("tiny", "ave", ["task.avmoe.num_cma=2", "caste.topk_ratio=0.25", "visual.depths=[2,2,2,2]"])
    assert cfg.task.avmoe.num_cma == 2 and cfg.caste.topk_ratio == 0.25 and cfg.visual.depths == (2, 2, 2, 2)
    cfg = load_config("tiny", "ave", ["task.train.lr=1", "task.train.precision=16", "visual.weights=null"])
    assert cfg.task.train.lr == 1 and cfg.task.train.precision == "16" and cfg.visual.weights is None


@pytest.mark.parametrize(
    "preset,task,overrides,match",
    [
        ("huge", "ave", [], "unknown config"),
        ("tiny", "asr", [], "unknown task"),
        ("tiny", "ave", ["caste.nope=1"], "no field"),
        ("tiny", "ave", ["nope.x=1"], "no section"),
        ("tiny", "ave", ["caste.topk_ratio"], "key=value"),
        ("tiny", "ave", ["task.train.epochs=abc"], 'task.train.epochs: expected an integer, got "abc"'),
        ("tiny", "ave", ["task.avmoe.pre_ln=1"], "task.avmoe.pre_ln: expected true or false, got 1"),
        ("tiny", "ave", ["visual.depths=3"], "visual.depths: expected a list, got 3"),
    ],
)
def test_bad_config_requests_raise_config_error(preset, task, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(preset, task, overrides)


def test_tiny_preset_overrides_task_training_but_not_paper_settings():
    assert load_config("tiny", "ave").task.train.accum_steps == 1
    assert load_config("paper", "ave").task.train.accum_steps == 8
