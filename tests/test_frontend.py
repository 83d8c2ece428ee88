"""The in-graph audio front end (decisions D6; architecture.md §1.1 "HTS-AT front-end", §1.4)."""

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caeav.config import ConfigError, FrontEndConfig
from caeav.model import frontend_tables as tables
from caeav.model.frontend import AudioFrontEnd

SR = 32000


def _front_end(tile_seconds=10, bn="random", seed=0):
    fe = AudioFrontEnd(FrontEndConfig(), tile_seconds=tile_seconds).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if bn == "identity":  # (x - 0) / sqrt((1 - eps) + eps) · 1 + 0 = x: the output is the log-mel in dB
            fe.bn0.running_var.fill_(1.0 - fe.bn0.eps)
        else:  # statistics of the order HTS-AT's AudioSet bn0 holds
            fe.bn0.running_mean.copy_(torch.rand(64, generator=g) * -40 - 10)
            fe.bn0.running_var.copy_(torch.rand(64, generator=g) * 250 + 50)
            fe.bn0.weight.copy_(torch.rand(64, generator=g) * 1.5 + 0.5)
            fe.bn0.bias.copy_(torch.rand(64, generator=g) * 2 - 1)
    return fe


def _audio(T=3, seed=0):
    """[1, T, 32000]: noise + tones, a chirp over a noise floor, and a silent segment (hits amin)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SR, dtype=torch.float64) / SR
    segs = [
        0.1 * torch.randn(SR, generator=g, dtype=torch.float64) + 0.3 * torch.sin(2 * math.pi * 440 * t),
        0.3 * torch.sin(2 * math.pi * (100 * t + 3000 * t * t))
        + 0.01 * torch.randn(SR, generator=g, dtype=torch.float64),
        torch.zeros(SR, dtype=torch.float64),
    ]
    return torch.stack([segs[i % len(segs)] for i in range(T)])[None].float()


def _htsat_reference(wave, bn0, tile_seconds):
    """HTS-AT as written (torchlibrosa + htsat.py), computed independently of the module's tables except the mel
    matrix (checked against librosa below): torch.stft in float64 up to bn0, then F.interpolate in float32 like the
    float32 model, then reshape_wav2img's permute/reshape fold."""
    x = wave.reshape(-1, SR).double().repeat(1, tile_seconds)  # 10 (or 5) identical copies
    spec = torch.stft(x, 1024, 320, 1024, torch.hann_window(1024, dtype=torch.float64), center=True,
                      pad_mode="reflect", return_complex=True).abs() ** 2  # [BT, 513, frames]
    mel = torch.tensor(tables.mel_filterbank(SR, 1024, 64, 50.0, 14000.0)) @ spec
    logmel = (10 * torch.log10(mel.clamp(min=1e-10))).transpose(1, 2).unsqueeze(1)  # [BT, 1, frames, 64]
    bn = torch.nn.BatchNorm2d(64).double().eval()
    bn.load_state_dict(bn0.state_dict())
    logmel = bn(logmel.transpose(1, 3)).transpose(1, 3).float()  # htsat.py: mel bins as channels
    x = F.interpolate(logmel, (1024, 64), mode="bicubic", align_corners=True)
    x = x.permute(0, 1, 3, 2).reshape(x.shape[0], 1, 64, 4, 256).permute(0, 1, 3, 2, 4)
    return x.reshape(x.shape[0], 1, 256, 256)


# --- (1) against a direct HTS-AT computation -------------------------------------------------------------------------
@pytest.mark.parametrize("tile_seconds", [10, 5])
@pytest.mark.parametrize("bn", ["identity", "random"])
def test_matches_direct_htsat_computation(tile_seconds, bn):
    fe = _front_end(tile_seconds, bn)
    wave = _audio(T=3)
    with torch.no_grad():
        out = fe(wave)
    ref = _htsat_reference(wave, fe.bn0, tile_seconds)
    err = (out - ref).abs().max().item()
    # achieved: ~2e-5 dB (identity bn0, values -100..+25 dB), ~2e-6 after a bn0 that divides by ~7..17
    assert err <= 1e-3, err
    assert ref.amin() < -50 if bn == "identity" else True  # the silent segment sits at the amin floor (-100 dB)


# --- (2) mel filterbank ---------------------------------------------------------------------------------------------
def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ours = tables.mel_filterbank(SR, 1024, 64, 50.0, 14000.0)
    theirs = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50.0, fmax=14000.0, htk=False, norm="slaney")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


def test_mel_filterbank_defining_properties():
    assert tables.hz_to_mel(1000.0) == pytest.approx(15.0) and tables.hz_to_mel(6400.0) == pytest.approx(42.0)
    assert tables.hz_to_mel(300.0) == pytest.approx(4.5)  # linear part: 200/3 Hz per mel
    np.testing.assert_allclose(tables.mel_to_hz(tables.hz_to_mel(np.array([50.0, 999.0, 1000.0, 14000.0]))),
                               [50.0, 999.0, 1000.0, 14000.0])
    mel = tables.mel_filterbank(SR, 1024, 64, 50.0, 14000.0)
    edges = tables.mel_to_hz(np.linspace(tables.hz_to_mel(50.0), tables.hz_to_mel(14000.0), 66))
    freqs = np.linspace(0, SR / 2, 513)
    assert mel.shape == (64, 513) and (mel >= 0).all()
    assert (mel[:, freqs < 50.0] == 0).all() and (mel[:, freqs > 14000.0] == 0).all()
    # the peak bin of each filter is the FFT bin nearest its centre edge (for filters wider than a bin)
    wide = (edges[2:] - edges[:-2]) > 4 * (SR / 1024)
    assert (np.abs(freqs[mel.argmax(1)] - edges[1:-1])[wide] <= SR / 1024).all()
    # slaney norm: height 2/(f_{i+2}-f_i) -> unit area in Hz (Riemann sum is accurate for wide filters)
    very_wide = (edges[2:] - edges[:-2]) > 20 * (SR / 1024)
    np.testing.assert_allclose((mel.sum(1) * SR / 1024)[very_wide], 1.0, rtol=0.02)


# --- (3) interpolation matrix ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_in,n_out", [(1001, 1024), (501, 1024), (7, 19), (10, 4), (2, 5), (64, 64)])
def test_bicubic_matrix_is_torch_interpolate(n_in, n_out):
    x = torch.randn(2, 1, n_in, 5, dtype=torch.float64) * 10 - 20
    ref64 = F.interpolate(x, (n_out, 5), mode="bicubic", align_corners=True)
    w64 = torch.tensor(tables.bicubic_matrix(n_in, n_out, np.float64))
    assert (w64 @ x - ref64).abs().max() < 1e-12  # float64 arithmetic: identical up to rounding
    ref32 = F.interpolate(x.float(), (n_out, 5), mode="bicubic", align_corners=True)
    w32 = torch.tensor(tables.bicubic_matrix(n_in, n_out), dtype=torch.float32)
    assert (w32 @ x.float() - ref32).abs().max() < 4e-5  # a few float32 ulps at |x| ≈ 40 (4-term sums)
    torch.testing.assert_close(w32.sum(1), torch.ones(n_out))


# --- (4) shapes, periodic shortcut ---------------------------------------------------------------------------------
@pytest.mark.parametrize("T,tile_seconds,frames", [(10, 10, 1001), (5, 5, 501)])
def test_output_shape_and_frame_counts(T, tile_seconds, frames):
    fe = _front_end(tile_seconds)
    assert fe.n_frames == frames and fe.n_slots == 107  # 104 distinct frames + a 3-slot gap
    with torch.no_grad():
        out = fe(torch.randn(1, T, SR) * 0.1)
    assert out.shape == (T, 1, 256, 256) and torch.isfinite(out).all()


@pytest.mark.parametrize("tile_seconds", [10, 5])
def test_periodic_layout_is_exact(tile_seconds):
    n = tile_seconds * SR
    layout = tables.periodic_frame_layout(SR, n, 1024, 320)
    windows = tables.frame_windows(SR, n, 1024, 320)
    slots = layout.frame_slot[:, None] * 320 + np.arange(1024)[None, :]
    assert (layout.gather_index[slots] == windows).all()  # each frame's slot reads exactly its samples
    fe = _front_end(tile_seconds).double()
    wave = _audio(T=4).double()
    with torch.no_grad():
        fast, direct = fe(wave), fe.forward_direct(wave)
    assert (fast - direct).abs().max() < 1e-10
    fe.float()
    with torch.no_grad():
        assert (fe(wave.float()) - fe.forward_direct(wave.float())).abs().max() < 1e-4


def test_rows_are_video_major():
    fe = _front_end()
    wave = torch.randn(2, 3, SR) * 0.1
    with torch.no_grad():
        full = fe(wave)
        assert torch.allclose(full[4], fe(wave[1:2, 1:2])[0], atol=1e-5)  # row b·T + t = 1·3 + 1


# --- (5) bn0 ---------------------------------------------------------------------------------------------------------
def test_bn0_is_per_mel_bin_and_folded_rows_are_chunk_major():
    plain, normed = _front_end(bn="identity"), _front_end(bn="random")
    wave = _audio(T=2)
    with torch.no_grad():
        x, y = plain(wave), normed(wave)
    bn = normed.bn0
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    mel_of_row = torch.arange(256) % 64  # image row c·64 + m holds mel bin m (interp rows sum to 1: affine commutes)
    expect = x * scale[mel_of_row][:, None] + shift[mel_of_row][:, None]
    assert (expect - y).abs().max() < 1e-4
    assert set(normed.state_dict()) == {f"bn0.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                                              "num_batches_tracked")}  # fixed tables not persisted


def test_bn0_train_mode_uses_every_frame():
    a, b = _front_end(), _front_end()
    a.train(), b.train()
    wave = _audio(T=3)
    out_fast, out_direct = a(wave), b.forward_direct(wave)
    assert (out_fast - out_direct).abs().max() < 1e-4
    torch.testing.assert_close(a.bn0.running_mean, b.bn0.running_mean)
    torch.testing.assert_close(a.bn0.running_var, b.bn0.running_var)


# --- (6) ONNX ---------------------------------------------------------------------------------------------------------
def test_onnx_export_runs_in_onnxruntime_with_tensorrt_ops(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    fe = _front_end()
    path = tmp_path / "frontend.onnx"
    torch.onnx.export(fe, (_audio(T=2),), str(path), dynamo=True, opset_version=18, input_names=["audio"],
                      output_names=["spec_image"], dynamic_shapes=({0: "batch"},), external_data=False)
    model = onnx.load(str(path))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    ops = {n.op_type for n in model.graph.node}
    trt = json.loads(resources.files("caeav").joinpath("assets/reference/tensorrt-onnx-ops.json").read_text())
    assert all(trt["operators"].get(op, {}).get("supported") for op in ops), ops
    assert not ops & {"STFT", "DFT", "Resize", "Pad", "MelWeightMatrix"} and {"Conv", "MatMul", "Log"} <= ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        wave = _audio(T=2 * batch, seed=batch).reshape(batch, 2, SR)
        got = session.run(None, {"audio": wave.numpy()})[0]
        with torch.no_grad():
            want = fe(wave).numpy()
        assert got.shape == (2 * batch, 1, 256, 256) and np.abs(got - want).max() < 1e-4


# --- (7) meta device, config errors ---------------------------------------------------------------------------------
def test_builds_on_meta_and_refills_fixed_buffers():
    with torch.device("meta"):
        fe = AudioFrontEnd(FrontEndConfig())
    assert all(t.is_meta for t in [*fe.parameters(), *fe.buffers()])
    assert fe.interp_slots.shape == (4, 107, 256) and fe.dft_kernel.shape == (1024, 1, 1024)
    fe.to_empty(device="cpu")
    fe.init_fixed_buffers()
    ref = AudioFrontEnd(FrontEndConfig())
    for name, buf in ref.named_buffers():
        if not name.startswith("bn0."):
            assert torch.equal(getattr(fe, name), buf), name


def test_rejects_bad_shapes_and_configs():
    fe = _front_end()
    with pytest.raises(ValueError, match="expected audio"):
        fe(torch.zeros(2, 16000))
    with pytest.raises(ConfigError, match="STFT frames"):
        AudioFrontEnd(FrontEndConfig(), tile_seconds=11)  # 1101 frames > 1024
    with pytest.raises(ConfigError, match="n_mels"):
        AudioFrontEnd(FrontEndConfig(n_mels=32))
