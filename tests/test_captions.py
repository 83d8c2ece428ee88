"""Caption path: frozen CLIP text tower (D4), shared caption mapper + bottlenecks (P Eq. 15-16)."""

import copy

import pytest
import torch
from torch import nn

from caeav.config import CaptionConfig, load_config
from caeav.errors import WeightsError
from caeav.model.captions import AUTHORS_KEY_PREFIXES, CaptionProjector, convert_authors_keys
from caeav.model.text_tower import build_text_tower, encode_texts, load_text_weights, text_state_dict, tokenize

TINY = CaptionConfig(tower="tiny", text_dim=32, tower_width=32, tower_layers=2, tower_heads=2, mapper_heads=4,
                     bottleneck_dim=8, vocab_size=49408)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_caption_bottlenecks_output_exactly_zero_at_init():
    torch.manual_seed(0)
    proj = CaptionProjector(TINY, dim_v=24, dim_a=16)
    v_cap, a_cap = proj(torch.randn(2, 77, 32), torch.randn(2, 77, 32))
    assert v_cap.shape == (2, 77, 24) and a_cap.shape == (2, 77, 16)  # per clip, not repeated over T (D8)
    assert torch.count_nonzero(v_cap) == 0 and torch.count_nonzero(a_cap) == 0


def test_mapper_is_shared_by_both_captions():
    torch.manual_seed(1)
    proj = CaptionProjector(TINY, dim_v=24, dim_a=24).eval()
    for p in proj.parameters():
        nn.init.normal_(p, std=0.1)
    proj.bottleneck_a.load_state_dict(proj.bottleneck_v.state_dict())
    s = torch.randn(2, 77, 32)
    v_cap, a_cap = proj(s, s)
    torch.testing.assert_close(v_cap, a_cap, rtol=0, atol=0)
    assert sum(isinstance(m, nn.LayerNorm) for m in proj.modules()) == 1


def test_caption_projector_paper_counts_on_meta():
    cfg = load_config("paper", "ave").caption
    with torch.device("meta"):
        proj = CaptionProjector(cfg, dim_v=1536, dim_a=768)
    assert _count(proj.mapper) == 2_363_904
    assert (_count(proj.bottleneck_v), _count(proj.bottleneck_a)) == (112_176, 74_544)
    assert _count(proj) == 2_363_904 + 186_720


def test_authors_caption_keys_load_strictly():
    proj = CaptionProjector(TINY, dim_v=24, dim_a=16)
    renamed = {}
    for key, value in proj.state_dict().items():
        for old, new in AUTHORS_KEY_PREFIXES:
            if key.startswith(new):
                renamed[old + key[len(new):]] = value
    assert len(renamed) == len(proj.state_dict())
    proj.load_state_dict(convert_authors_keys({**renamed, "case.tau": torch.zeros(())}), strict=True)


def test_tiny_text_tower_is_frozen_and_deterministic():
    torch.manual_seed(2)
    tower = build_text_tower(TINY)
    texts = ["a dog barks in a park", "a man plays an acoustic guitar"]
    out = encode_texts(tower, texts)
    assert out.shape == (2, 77, 32) and out.dtype == torch.float32
    torch.testing.assert_close(encode_texts(tower, texts), out, rtol=0, atol=0)
    torch.manual_seed(2)
    torch.testing.assert_close(encode_texts(build_text_tower(TINY), texts), out, rtol=0, atol=0)
    tower.train()
    assert not tower.training and not any(m.training for m in tower.modules())
    assert not any(p.requires_grad for p in tower.parameters())
    ids = tokenize(texts)
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, 0].item() == 49406 and (ids[0] == 49407).sum() == 1  # CLIP start / end tokens


def test_paper_text_tower_count_on_meta():
    cfg = load_config("paper", "ave").caption
    with torch.device("meta"):
        tower = build_text_tower(cfg, load_weights=False)
    assert _count(tower) == 123_060_480  # CLIP ViT-L/14 text transformer without its text projection
    assert not any(p.requires_grad for p in tower.parameters())


def test_missing_or_unset_weights_are_one_line_errors(tmp_path):
    cfg = load_config("paper", "ave").caption
    for weights in (None, str(tmp_path / "nope.bin")):
        cfg.weights = weights
        with pytest.raises(WeightsError) as err:
            build_text_tower(cfg)
        assert "\n" not in str(err.value) and "ViT-L/14" in str(err.value)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_text_weights(build_text_tower(TINY), str(bad))


def test_open_clip_state_dict_loads_text_part_only(tmp_path):
    torch.manual_seed(3)
    src = build_text_tower(TINY)
    full = {k: v for k, v in src.text.state_dict().items()}
    full["text_projection"] = torch.zeros(32, 16)  # a full CLIP checkpoint: projection and vision tower are skipped
    full["visual.conv1.weight"] = torch.zeros(4, 3, 2, 2)
    full["logit_scale"] = torch.zeros(())
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"state_dict": {"module." + k: v for k, v in full.items()}}, path)
    dst = build_text_tower(TINY)
    load_text_weights(dst, str(path))
    ids = tokenize(["thunder and rain"])
    torch.testing.assert_close(dst(ids), src(ids), rtol=0, atol=0)


def test_hugging_face_clip_text_weights_match_transformers():
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu")
    torch.manual_seed(4)
    hf = transformers.CLIPTextModel(hf_cfg).eval()
    tower = build_text_tower(TINY)
    tower.text.load_state_dict(text_state_dict(hf.state_dict()), strict=True)
    ids = tokenize(["a crowd cheers at a stadium", "waves crash on rocks"])
    with torch.no_grad():
        expected = hf(input_ids=ids).last_hidden_state
    torch.testing.assert_close(tower(ids), expected, rtol=1e-4, atol=1e-5)
    prefixed = {"text_model." + k: v for k, v in hf.state_dict().items()}  # CLIPModel files (the hub's L/14)
    prefixed["vision_model.post_layernorm.weight"] = torch.ones(4)
    assert text_state_dict(prefixed).keys() == tower.text.state_dict().keys()


class _ScriptedCLIP(nn.Module):
    """Stand-in for OpenAI's TorchScript `ViT-L-14.pt`: CLIP key names, fp16 weights."""

    def __init__(self, text):
        super().__init__()
        self.token_embedding, self.positional_embedding = text.token_embedding, text.positional_embedding
        self.transformer, self.ln_final = text.transformer, text.ln_final
        self.text_projection = nn.Parameter(torch.zeros(text.width, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_openai_torchscript_archive_loads(tmp_path):
    torch.manual_seed(5)
    src = build_text_tower(TINY)
    src.text.half().float()  # the archive stores fp16: compare against the same rounded weights
    path = tmp_path / "ViT-L-14.pt"
    archive = _ScriptedCLIP(copy.deepcopy(src.text)).half()
    torch.jit.trace(archive, torch.zeros(1)).save(str(path))
    dst = build_text_tower(TINY)
    load_text_weights(dst, str(path))
    ids = tokenize(["birds chirping"])
    torch.testing.assert_close(dst(ids), src(ids), rtol=0, atol=0)
