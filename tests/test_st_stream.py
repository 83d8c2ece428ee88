"""AVVP's spatio-temporal stream (R(2+1)D-18): architecture against torchvision, weights files, LLP frame sampling,
the loader's two feature paths, the model's `st` / `st_clips` inputs, and the authors' audio-block bypass flag."""

import numpy as np
import pytest
import torch

from caeav.config import ConfigError, STStreamConfig, load_config
from caeav.errors import DataError, WeightsError
from caeav.media import resize_rgb
from caeav.media.st_frames import STSampling, decode_st_frames, st_clip_input, st_instants
from caeav.model.st_stream import STFeatureEncoder, STStream, build_st_stream

pytestmark = pytest.mark.filterwarnings("ignore::caeav.media.MediaWarning")
TINY = load_config("tiny", "avvp")


def torchvision_stream(weights_from=None):
    """torchvision's r2plus1d_18 (weights=None) with random BatchNorm statistics and affines, and its trunk
    (`children()[:-1]`, LLP's extractor); `weights_from` copies our weights into it instead."""
    from torchvision.models.video import r2plus1d_18

    torch.manual_seed(0)
    tv = r2plus1d_18(weights=None).eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.1), m.bias.normal_(0.0, 0.1)
    return tv, torch.nn.Sequential(*list(tv.children())[:-1])


def _same_weights_outputs(shape):
    tv, trunk = torchvision_stream()
    ours = STStream(STStreamConfig())
    ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}, strict=True)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return trunk(x).flatten(1), ours(x)


# ------------------------------------------------------------------------------------------------ architecture


def test_paper_stream_has_torchvisions_keys_and_shapes_and_31_3m_parameters():
    from torchvision.models.video import r2plus1d_18

    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in r2plus1d_18(weights=None).state_dict().items()}
        ours = STStream(STStreamConfig())
    assert {k: v for k, v in theirs.items() if not k.startswith("fc.")} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == 31_300_125  # torchvision's 31,505,325 less the 400-class fc
    assert ours.dim == 512 and not any(p.requires_grad for p in ours.parameters())


def test_paper_stream_equals_torchvision_on_the_same_random_weights():
    ref, got = _same_weights_outputs((1, 3, 4, 48, 48))  # same network, a small input (2 CPU cores)
    assert got.shape == (1, 512) and torch.equal(ref, got)


@pytest.mark.slow
def test_paper_stream_equals_torchvision_on_an_llp_segment():
    ref, got = _same_weights_outputs((1, 3, 8, 112, 112))
    assert torch.equal(ref, got)


def test_tiny_stream_is_seeded_frozen_and_always_in_eval():
    first, second = STStream(TINY.st), STStream(TINY.st)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert list(first.state_dict()) == [k for k in STStream(STStreamConfig()).state_dict()]  # same block structure
    other = STStream(STStreamConfig(**{**vars(TINY.st), "seed": 1}))
    assert not torch.equal(other.stem[0].weight, first.stem[0].weight)
    first.train()
    assert not first.training and not first.layer1[0].conv1[1].training
    clips = torch.randn(2, 10, 3, TINY.st.frames, TINY.st.size, TINY.st.size)
    assert first.segments(clips).shape == (2, 10, 32)


def test_stream_width_must_be_the_heads_st_dim():
    cfg = load_config("tiny", "avvp", ["task.head.st_dim=16"])
    from caeav.model.cae_av import build_model

    with pytest.raises(ConfigError, match=r"st_dim is 16 .*\(st\.channels"):
        build_model(cfg, device="meta")


# ------------------------------------------------------------------------------------------------ weights files


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_weights_file_loads_and_fc_is_dropped(tmp_path):
    source = STStream(TINY.st)
    state = dict(source.state_dict(), **{"fc.weight": torch.zeros(400, 32), "fc.bias": torch.zeros(400)})
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # older torchvision files
    torch.save(state, tmp_path / "st.pth")
    cfg = STStreamConfig(**{**vars(TINY.st), "seed": 5, "weights": str(tmp_path / "st.pth")})
    loaded = build_st_stream(cfg)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))
    torch.save({"stem.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as exc:
        build_st_stream(STStreamConfig(**{**vars(TINY.st), "weights": str(tmp_path / "bad.pth")}))
    assert "does not fit the R(2+1)D-18 stream" in _one_line(exc)


def test_missing_weights_file_is_one_line_naming_the_download(tmp_path):
    from caeav.model.weights import load_st_weights

    cfg = load_config("paper", "avvp", [f"st.weights={tmp_path / 'r2plus1d_18-91a641e6.pth'}"])
    with torch.device("meta"):
        stream = STStream(cfg.st)
    with pytest.raises(WeightsError) as exc:
        load_st_weights(stream, cfg.st.weights, cfg.st)  # what build_model(cfg) does with st.weights
    line = _one_line(exc)
    assert "no such file" in line and "download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in line
    assert "st.weights=PATH" in line
    with pytest.raises(WeightsError) as exc:  # paper without st.weights: no features from random weights
        STFeatureEncoder(load_config("paper", "avvp").st)(np.zeros((10, 3, 8, 112, 112), np.float32))
    assert "r2plus1d_18-91a641e6.pth" in _one_line(exc)


# ------------------------------------------------------------------------------------------------ frame sampling


def test_llp_sampling_is_8_frames_per_second_resized_to_112_with_kinetics_statistics():
    llp = STSampling.from_config(load_config("paper", "avvp").st)
    assert llp == STSampling(8, 8.0, 112, (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
    np.testing.assert_allclose(st_instants(10, llp), np.arange(80) / 8.0)  # round(linspace(0, 79, 80)) / 8
    assert st_instants(2, STSampling(frames=3, fps=4.0)) == [0.0, 0.25, 0.75, 1.0, 1.5, 1.75]  # round(linspace(0, 7, 6)) / 4
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (80, 90, 160, 3), dtype=np.uint8)
    clips = st_clip_input(frames, 10, llp)
    assert clips.shape == (10, 3, 8, 112, 112) and clips.dtype == np.float32
    from PIL import Image

    pil = np.asarray(Image.fromarray(frames[13]).resize((112, 112), Image.Resampling.BILINEAR), np.float32) / 255
    expected = (pil - np.array(llp.mean, np.float32)) / np.array(llp.std, np.float32)  # segment 1, frame 5
    np.testing.assert_allclose(clips[1, :, 5].transpose(1, 2, 0), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(resize_rgb(frames[13], 112, "bilinear"), np.asarray(
        Image.fromarray(frames[13]).resize((112, 112), Image.Resampling.BILINEAR)))
    with pytest.raises(ValueError, match="80, H, W, 3"):
        st_clip_input(frames[:79], 10, llp)


# ------------------------------------------------------------------------------------------------ loader


@pytest.fixture(scope="module")
def llp_root(tmp_path_factory):
    from caeav.data.synth import synth_dataset

    return synth_dataset("avvp", tmp_path_factory.mktemp("llp") / "data", seed=3, clips=1, media="both").root


def _dataset(root, split="train", **kwargs):
    from caeav.train.batches import build_split

    return build_split(TINY, split, root, None, **kwargs)


def test_loader_computes_features_from_the_video_with_the_stream(llp_root, tmp_path):
    ds = _dataset(llp_root, cache_dir=tmp_path / "cache")
    record = ds.records[0]
    assert ds.st.form(record) == "video"
    feats = ds[0]["st"]
    assert feats.shape == (10, 32) and feats.dtype == np.float32
    sampling = STSampling.from_config(TINY.st)
    frames = decode_st_frames(ds.layout.video_path(record), 10, sampling)
    assert frames.shape == (40, 32, 32, 3) and frames.dtype == np.uint8
    with torch.no_grad():  # the model's own frozen stream on the same frames
        from caeav.model.cae_av import build_model

        model = build_model(TINY).eval()
        expected = model.st_stream(torch.from_numpy(st_clip_input(frames, 10, sampling))).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert ds.loader.cache.misses == 2 and ds.loader.cache.hits == 0  # the frames and the features
    second = _dataset(llp_root, cache_dir=tmp_path / "cache")
    again = second[0]["st"]  # computed once: the cache answers both
    assert second.loader.cache.hits == 2 and second.loader.cache.misses == 0
    np.testing.assert_array_equal(again, feats)


def test_loader_reads_llp_feature_files_first_and_names_a_wrong_shape(llp_root, tmp_path):
    import shutil

    from caeav.data.layout import forget_listings
    from caeav.data.synth_tasks import synth_llp_st_features

    root = tmp_path / "llp"
    shutil.copytree(llp_root, root)
    assert synth_llp_st_features(root, 32) == 3
    forget_listings()
    ds = _dataset(root)
    record = ds.records[0]
    assert ds.st.form(record) == "npy"
    computed = _dataset(llp_root)[0]["st"]
    feats = ds[0]["st"]
    assert feats.shape == computed.shape and feats.dtype == computed.dtype == np.float32
    np.testing.assert_array_equal(feats, np.load(root / "feats" / "r2plus1d_18" / f"{record.video_id}.npy"))
    bad = ds.layout.st_feature_path(record)
    np.save(bad, np.zeros((10, 512), np.float32))
    with pytest.raises(DataError) as exc:
        ds[0]
    assert str(bad) in _one_line(exc) and "[10, 32]" in str(exc.value)


def test_without_video_or_feature_file_the_record_is_missing(llp_root, tmp_path):
    import shutil

    from caeav.data.datasets import LLPDataset
    from caeav.data.layout import forget_listings

    root = tmp_path / "frames-only"
    shutil.copytree(llp_root, root, ignore=shutil.ignore_patterns("videos"))
    forget_listings()
    ds = LLPDataset(root, "train", st_dim=32, size=32)  # no encoder: only feature files count
    assert "feats/r2plus1d_18" in ds.missing_reason(ds.records[0])
    assert len(LLPDataset(root, "train", st_dim=32, size=32, skip_missing=True)) == 0
    with pytest.raises(DataError, match="R\\(2\\+1\\)D features"):
        ds[0]


# ------------------------------------------------------------------------------------------------ model


def test_model_takes_st_or_the_streams_clips():
    from caeav.model.cae_av import build_model

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    g = torch.Generator().manual_seed(2)
    S, st = TINY.task.input_size, TINY.st
    inputs = {"frames": torch.randn(2, 10, 3, S, S, generator=g), "wave": 0.1 * torch.randn(2, 10, 32000, generator=g),
              "vis_caption": torch.randn(2, 77, 64, generator=g), "aud_caption": torch.randn(2, 77, 64, generator=g)}
    clips = torch.randn(2, 10, 3, st.frames, st.size, st.size, generator=g)
    with torch.no_grad():
        from_clips = model(**inputs, st_clips=clips)
        given = model(**inputs, st=model.st_stream.segments(clips))
    for key in from_clips:
        assert torch.equal(from_clips[key], given[key])
    assert any(n.startswith("st_stream.") for n in model.frozen_parameter_names())
    assert any(k.startswith("st_stream.") for k in model.trainable_state_dict())  # stored: tiny's is random


def test_authors_audio_bypass_discards_the_htsat_blocks():
    from caeav.model.encoder import CAEAVEncoder

    g = torch.Generator().manual_seed(0)
    frames, wave = torch.randn(1, 10, 3, 64, 64, generator=g), 0.1 * torch.randn(1, 10, 32000, generator=g)
    results = {}
    for bypass in (False, True):
        cfg = load_config("tiny", "avvp", [f"task.authors_audio_bypass={str(bypass).lower()}"])
        assert cfg.to_dict()["task"]["authors_audio_bypass"] is bypass  # in checkpoint and manifest configs
        torch.manual_seed(0)
        enc = CAEAVEncoder(cfg).eval()
        with torch.no_grad():
            before = enc(frames, wave).a
            for block in (b for stage in enc.audio.layers for b in stage.blocks):
                for p in block.parameters():
                    p.add_(0.5 * torch.randn(p.shape, generator=g))
            results[bypass] = (before, enc(frames, wave).a)
    assert not torch.allclose(*results[False])  # D2: the blocks run
    torch.testing.assert_close(*results[True], rtol=0, atol=0)  # the authors' AVVP: their outputs are discarded
    assert load_config("paper", "avvp").task.authors_audio_bypass is False


def test_export_refuses_a_checkpoint_whose_published_stream_was_never_loaded():
    """A paper AVVP checkpoint trained on LLP's feature files without st.weights holds a random stream; a bundle would
    compute garbage features from the video, so `caeav export` stops with one line naming the download."""
    from types import SimpleNamespace

    from caeav.cli.export_cmd import _stream_weights
    from caeav.errors import ExportError

    model = SimpleNamespace(st_stream=object())
    paper = load_config("paper", "avvp")
    with pytest.raises(ExportError) as exc:
        _stream_weights(model, paper, "runs/avvp/best")
    assert "r2plus1d_18-91a641e6.pth" in _one_line(exc) and "random weights" in str(exc.value)
    _stream_weights(model, load_config("paper", "avvp", ["st.weights=/w/r2plus1d_18-91a641e6.pth"]), "x")
    _stream_weights(model, TINY, "x")  # tiny's stream is random by design
    _stream_weights(SimpleNamespace(st_stream=None), paper, "x")
