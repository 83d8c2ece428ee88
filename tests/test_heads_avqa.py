"""AVQA head (architecture.md §7.3): shapes, losses, grounding, prediction rule, parameter count, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caeav.config import load_config
from caeav.model.heads import postprocess
from caeav.config import ConfigError
from caeav.model.heads.avqa import AVQAHead, QuestionEncoder, pads_first
from head_helpers import B, T, avqa_inputs, check_tensorrt_ops, make_avqa, sgd_decreases


def test_paper_avqa_head_parameter_count_on_meta():
    with torch.device("meta"):
        head = AVQAHead(1536, 768, load_config("paper", "avqa").task)
    count = lambda m: sum(p.numel() for p in m.parameters())
    # Embedding 93×1536 + LSTM(1536→1536) + Linear(3072→1536)
    assert count(head.question_encoder) == 93 * 1536 + 4 * 1536 * (1536 + 1536 + 2) + 3072 * 1536 + 1536
    assert head.fc_ans.out_features == 42
    # the authors' head minus their never-used fc_a1_pure, fc_a2_pure and norm3 (3,545,088)
    assert count(head) == 66_870_444


# ---- AVQA ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives", ["none", "maps", "pooled"])
def test_avqa_shapes_and_loss_with_and_without_negatives(negatives):
    head = make_avqa().train()
    inputs = avqa_inputs(negatives=negatives)
    out = head(**inputs)
    assert out["answer"].shape == (B, 42)
    if negatives == "none":
        assert set(out) == {"answer"}
    else:
        assert set(out) == {"answer", "match_pos", "match_neg"}
        assert out["match_pos"].shape == out["match_neg"].shape == (B, T, 2)
    batch = {"answer": torch.tensor([3, 17])}
    terms = head.loss_terms(out, batch)
    assert set(terms) == ({"answer"} if negatives == "none" else {"answer", "match"})
    loss = head.loss(out, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert head.fc_ans.weight.grad is not None and head.question_encoder.word2vec.weight.grad is not None
    assert (head.fc4.weight.grad is not None) == (negatives != "none")


def test_avqa_loss_is_answer_ce_plus_half_match_ce():
    head = make_avqa().eval()
    with torch.no_grad():
        out = head(**avqa_inputs())
        answer = torch.tensor([5, 0])
        rows = torch.cat([out["match_pos"].reshape(-1, 2), out["match_neg"].reshape(-1, 2)])
        labels = torch.cat([torch.ones(B * T), torch.zeros(B * T)]).long()
        expected = F.cross_entropy(out["answer"], answer) + 0.5 * F.cross_entropy(rows, labels)
        torch.testing.assert_close(head.loss(out, {"answer": answer}), expected)


def test_avqa_grounding_matches_the_authors_per_frame_formula():
    head = make_avqa().eval()
    inputs = avqa_inputs(hw=3)
    with torch.no_grad():
        audio = head.fc_a2(F.relu(head.fc_a1(inputs["f_a"])))
        got = head.ground(inputs["f_v"], inputs["visual_maps"], audio)
        maps = inputs["visual_maps"].flatten(0, 1)  # [BT, C, H, W] as AVST
        pooled = F.adaptive_avg_pool2d(maps, 1).flatten(1)
        tokens = F.normalize(maps.flatten(2).permute(0, 2, 1), dim=2)
        a = F.normalize(audio.flatten(0, 1).unsqueeze(-1), dim=1)
        p = F.softmax(torch.matmul(tokens, a).squeeze(-1), dim=-1).unsqueeze(-2)
        grounded = torch.matmul(p, tokens).squeeze(-2)
        ref = head.fc_gl(torch.tanh(torch.cat([pooled, grounded], dim=-1))).view(B, T, -1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_avqa_loss_decreases_and_predict_matches_numpy():
    head = make_avqa(seed=4)
    inputs = avqa_inputs()
    batch = {"answer": torch.tensor([11, 29])}
    before, after = sgd_decreases(head, lambda: head(**inputs), batch, lr=0.1)
    assert after < 0.8 * before, (before, after)
    head.eval()
    with torch.no_grad():
        out = head(**{k: v for k, v in inputs.items() if k != "visual_neg"})
    pred = AVQAHead.predict(out)
    assert pred.shape == (B,) and pred.dtype == torch.int64
    np.testing.assert_array_equal(postprocess.avqa_predict({"answer": out["answer"].numpy()}), pred.numpy())


def test_pads_first_rolls_each_question_so_its_pads_come_first():
    g = torch.Generator().manual_seed(0)
    rows = []
    for words in (0, 1, 5, 13, 14):
        row = torch.zeros(14, dtype=torch.int64)
        row[:words] = torch.randint(1, 93, (words,), generator=g)
        rows.append(row)
    got = pads_first(torch.stack(rows))
    for row, out in zip(rows, got):
        words = int((row != 0).sum())
        assert out.tolist() == [0] * (14 - words) + row[:words].tolist()


def test_question_pads_trailing_is_avst_and_leading_reads_the_moved_question():
    torch.manual_seed(0)
    trailing = QuestionEncoder(93, 8, 16, 16, pads="trailing")
    leading = QuestionEncoder(93, 8, 16, 16, pads="leading")
    leading.load_state_dict(trailing.state_dict())  # same parameters: the flag is not a different model
    question = avqa_inputs(3)["question"]
    with torch.no_grad():
        _, (h, c) = trailing.lstm(torch.tanh(trailing.word2vec(question)))
        avst = trailing.fc(torch.tanh(torch.cat([h, c], dim=-1)[0]))
        torch.testing.assert_close(trailing(question), avst)  # AVST: the final state after the trailing pads
        torch.testing.assert_close(leading(question), trailing(pads_first(question)))
        assert not torch.allclose(leading(question), avst)
    with pytest.raises(ConfigError, match="question_pads"):
        QuestionEncoder(93, 8, 16, 16, pads="middle")


def test_leading_pads_keep_questions_apart_at_initialisation():
    """Why `leading` is the default: at init the trailing pads wash the words out of the LSTM state."""
    question = avqa_inputs(3)["question"]  # 9, 10 and 11 words, then pads
    spread = {}
    for pads in ("trailing", "leading"):
        torch.manual_seed(0)
        enc = QuestionEncoder(93, 32, 256, 256, pads=pads)
        with torch.no_grad():
            spread[pads] = float(torch.pdist(enc(question)).min())
    assert spread["leading"] > 3 * spread["trailing"], spread


# ---- ONNX export (opset 18, dynamic batch) ---------------------------------------------------------------------


def test_onnx_export_avqa_head_eval_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    head = make_avqa().eval()
    names = ["f_v", "f_a", "visual_maps", "question"]
    inputs = avqa_inputs(2, negatives="none")
    path = tmp_path / "avqa_head.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(head, tuple(inputs[n] for n in names), str(path), dynamo=True, opset_version=18,
                      input_names=names, output_names=["answer"], dynamic_shapes={n: {0: batch} for n in names},
                      verbose=False)
    used = check_tensorrt_ops(onnx.load(str(path)), onnx)
    assert "LSTM" in used and "Attention" not in used
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        inputs = avqa_inputs(b, seed=20 + b, negatives="none")
        (got,) = sess.run(None, {n: inputs[n].numpy() for n in names})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), head(**inputs)["answer"], rtol=1e-4, atol=1e-5)
