"""Hand-computed cases for the official metrics (metrics-and-data.md §2). Expected values are worked out in comments."""

import math

import numpy as np
import pytest

from caeav.metrics import (
    accuracy_from_logits,
    avqa_accuracy,
    avs_scores,
    avvp_scores,
    binarize,
    event_level,
    extract_events,
    fscore_thresholds,
    frame_iou,
    predict_segments,
    running_mean_f32,
    segment_accuracy,
    segment_level,
    video_fscore,
    video_miou,
)

C, T = 25, 10


def clip(**runs):
    """A [25, 10] 0/1 matrix; runs like c3=[(0, 10)] set class 3 on segments [0, 10)."""
    m = np.zeros((C, T), np.int64)
    for key, spans in runs.items():
        for a, b in spans:
            m[int(key[1:]), a:b] = 1
    return m


EMPTY = clip()


# ---------------------------------------------------------------- AVVP: events


def test_extract_events_maximal_runs_including_the_clip_boundaries():
    assert extract_events([0] * 10) == []
    assert extract_events([1] * 10) == [(0, 10)]
    assert extract_events([1, 1, 0, 0, 1, 0, 0, 0, 1, 1]) == [(0, 2), (4, 5), (8, 10)]
    assert extract_events([0, 0, 0, 0, 0, 0, 0, 0, 0, 1]) == [(9, 10)]
    with pytest.raises(ValueError):
        extract_events([0, 2, 1])


# ---------------------------------------------------------------- AVVP: one clip


def test_empty_prediction_and_empty_ground_truth_score_one():
    # no class qualifies (TP+FP = TP+FN = 0 everywhere) -> the "all true negatives" default 1.0 for a, v, pooled, av
    assert tuple(segment_level(EMPTY, EMPTY, EMPTY, EMPTY)) == (1.0, 1.0, 1.0, 1.0)
    assert tuple(event_level(EMPTY, EMPTY, EMPTY, EMPTY)) == (1.0, 1.0, 1.0, 1.0)


def test_empty_prediction_against_a_full_length_audio_event():
    gt_a = clip(c0=[(0, 10)])
    # audio: class 0 has TP 0, FP 0, FN 10 -> qualifies with F = 0; visual and av: nothing qualifies -> 1.0;
    # pooled: class 0 TP 0, FN 10 -> 0.  Event level: one GT run (0,10), no prediction -> FN 1 -> the same.
    assert tuple(segment_level(EMPTY, EMPTY, gt_a, EMPTY)) == (0.0, 1.0, 0.0, 1.0)
    assert tuple(event_level(EMPTY, EMPTY, gt_a, EMPTY)) == (0.0, 1.0, 0.0, 1.0)


def test_single_event_spanning_the_video_predicted_exactly():
    m = clip(c3=[(0, 10)])
    assert tuple(segment_level(m, m, m, m)) == (1.0, 1.0, 1.0, 1.0)
    assert tuple(event_level(m, m, m, m)) == (1.0, 1.0, 1.0, 1.0)


def test_partial_overlap_below_half_iou():
    gt, pred = clip(c2=[(2, 6)]), clip(c2=[(4, 9)])
    # segments: TP {4,5} = 2, FP {6,7,8} = 3, FN {2,3} = 2 -> F = 2*2 / (2*2 + 3 + 2) = 4/9
    f = segment_level(pred, EMPTY, gt, EMPTY)
    assert f.audio == pytest.approx(4 / 9, abs=1e-15)
    # events: |P∩G| = 2, |P∪G| = 7, 2 < 3.5 -> the prediction is an FP and the GT event an FN -> F = 0
    assert event_level(pred, EMPTY, gt, EMPTY).audio == 0.0


def test_partial_overlap_at_or_above_half_iou():
    # IoU 4/6 >= 0.5 -> TP; segments TP 4, FN 2 -> 8/10
    gt, pred = clip(c1=[(0, 6)]), clip(c1=[(0, 4)])
    assert segment_level(pred, EMPTY, gt, EMPTY).audio == pytest.approx(0.8, abs=1e-15)
    assert event_level(pred, EMPTY, gt, EMPTY).audio == 1.0
    # IoU exactly 0.5 counts (inclusive): P (0,2), G (0,4): 2 >= 0.5 * 4
    gt, pred = clip(c1=[(0, 4)]), clip(c1=[(0, 2)])
    assert event_level(pred, EMPTY, gt, EMPTY).audio == 1.0
    assert segment_level(pred, EMPTY, gt, EMPTY).audio == pytest.approx(2 / 3, abs=1e-15)  # 2*2/(4+2)


def test_events_touching_both_clip_boundaries():
    gt = clip(c5=[(0, 2), (8, 10)])
    pred = clip(c5=[(0, 1), (4, 5), (8, 10)])
    # events: (0,1)~(0,2) IoU 1/2 -> TP; (4,5) -> FP; (8,10)~(8,10) -> TP; every GT event matched -> FN 0
    #   F = 2*2 / (2*2 + 1 + 0) = 0.8
    assert event_level(pred, EMPTY, gt, EMPTY).audio == pytest.approx(0.8, abs=1e-15)
    # segments: pred {0,4,8,9}, GT {0,1,8,9}: TP 3, FP 1, FN 1 -> 6/8
    assert segment_level(pred, EMPTY, gt, EMPTY).audio == pytest.approx(0.75, abs=1e-15)


def test_classes_absent_from_prediction_and_ground_truth_do_not_count():
    gt = clip(c0=[(0, 10)])
    pred = clip(c0=[(0, 10)], c1=[(3, 5)])
    # class 0: F = 1; class 1: FP only -> F = 0; the 23 other classes do not qualify -> mean (1 + 0) / 2
    assert segment_level(pred, EMPTY, gt, EMPTY).audio == 0.5
    assert event_level(pred, EMPTY, gt, EMPTY).audio == 0.5


def test_pooled_score_adds_audio_and_visual_counts():
    so_a, gt_a = clip(c0=[(0, 10)]), clip(c0=[(0, 10)])
    so_v, gt_v = EMPTY, clip(c0=[(0, 5)])
    # segments: audio TP 10 -> 1; visual FN 5 -> 0; pooled class 0 TP 10, FN 5 -> 20/25 = 0.8;
    #   av: GT_av = [0,5), SO_av = 0 -> FN 5 -> 0
    assert tuple(segment_level(so_a, so_v, gt_a, gt_v)) == pytest.approx((1.0, 0.0, 0.8, 0.0), abs=1e-15)
    # events: audio TP 1; visual FN 1; pooled TP 1, FN 1 -> 2/3; av: FN 1 -> 0
    assert tuple(event_level(so_a, so_v, gt_a, gt_v)) == pytest.approx((1.0, 0.0, 2 / 3, 0.0), abs=1e-15)


# ---------------------------------------------------------------- AVVP: thresholds and dataset


def test_binarize_uses_inclusive_threshold_and_the_predicted_video_label():
    video = np.zeros(C)
    video[0], video[1] = 0.5, 0.49  # class 0 on (>= 0.5, inclusive), class 1 off
    frames = np.zeros((T, C))
    frames[:, 0] = 0.5
    frames[:, 1] = 0.9  # on in every frame but gated off by the video-level prediction
    so_a, so_v = binarize(video, frames, np.zeros((T, C)))
    assert so_a.shape == (C, T) and so_a[0].tolist() == [1] * 10 and so_a[1].sum() == 0 and so_v.sum() == 0


def test_dataset_averages_clip_scores_and_event_av_is_the_pooled_score():
    # clip A: the pooled case above (segment scores a 1, v 0, pooled 0.8, av 0); clip B: all empty (1, 1, 1, 1)
    pa = np.stack([clip(c0=[(0, 10)]), EMPTY])
    pv = np.stack([EMPTY, EMPTY])
    ga = np.stack([clip(c0=[(0, 10)]), EMPTY])
    gv = np.stack([clip(c0=[(0, 5)]), EMPTY])
    seg = avvp_scores(pa, pv, ga, gv)["segment"]
    # A = 100*(1+1)/2 = 100, V = 100*(0+1)/2 = 50, AV = 50, Type@AV = (50+100+50)/3, Event@AV = 100*(0.8+1)/2 = 90
    assert seg == pytest.approx({"audio": 100.0, "visual": 50.0, "audio_visual": 50.0, "type_av": 200 / 3, "event_av": 90.0})
    evt = avvp_scores(pa, pv, ga, gv)["event"]
    # event-level pooled for clip A is 2/3 -> Event@AV = 100*(2/3+1)/2
    assert evt["event_av"] == pytest.approx(100 * (2 / 3 + 1) / 2)


# ---------------------------------------------------------------- AVE


def test_ave_prediction_rule_and_accuracy():
    # GT: class 3 on segments 2..5, background elsewhere
    target = np.array([[28, 28, 3, 3, 3, 3, 28, 28, 28, 28]])
    is_event = np.array([[-1, -1, 1, 1, 1, 1, -1, 0.0, 1, -1]], np.float32)  # logit 0 -> sigmoid 0.5 -> background
    scores = np.zeros((1, 28), np.float32)
    scores[0, 3] = 2.0
    pred = predict_segments(is_event, scores)
    assert pred.tolist() == [[28, 28, 3, 3, 3, 3, 28, 28, 3, 28]]
    # only segment 8 is wrong (event flag on a background segment) -> 9/10
    assert segment_accuracy(pred, target) == 90.0
    onehot = np.eye(29)[target]
    assert accuracy_from_logits(is_event, scores, onehot) == 90.0
    # wrong video class: the 4 foreground segments and segment 8 are wrong -> 5/10
    scores[0, 4] = 3.0
    assert accuracy_from_logits(is_event, scores, target) == 50.0


def test_ave_background_everywhere_and_class_ties():
    target = np.array([[28] * 10, [5] * 10])
    pred = predict_segments(np.full((2, 10), -3.0), np.zeros((2, 28)))
    assert segment_accuracy(pred, target) == 50.0  # the background video is right, the event video wrong
    tie = np.zeros((1, 28))
    tie[0, [1, 3]] = 1.0  # equal maxima -> the first index, as torch's max/argmax
    assert predict_segments(np.ones((1, 10)), tie).tolist() == [[1] * 10]


def test_ave_running_mean_is_float32_mean_of_batch_values():
    # (0*0 + 100)/1 = 100; (100*1 + 0)/2 = 50; (50*2 + 50)/3 = 50
    assert running_mean_f32([100.0, 0.0, 50.0]) == 50.0


# ---------------------------------------------------------------- AVS


def test_fscore_thresholds_are_255_float32_values_from_0_to_exactly_1():
    th = fscore_thresholds()
    assert th.dtype == np.float32 and th.shape == (255,) and th[0] == 0.0 and th[-1] == 1.0
    assert np.all(np.diff(th) > 0) and np.allclose(np.diff(th), 1 / 254, atol=1e-7)


def test_fscore_thresholds_are_bit_identical_to_torch_linspace():
    torch = pytest.importorskip("torch")
    expected = torch.linspace(0, 1 - 1e-10, 255, device="cpu").numpy()
    assert expected.dtype == np.float32
    assert np.array_equal(fscore_thresholds().view(np.uint32), expected.view(np.uint32))


def test_fscore_thresholds_table_is_packaged_and_read_only():
    from importlib import resources

    from caeav.metrics.avs import THRESHOLD_TABLE, _threshold_table

    assert resources.files("caeav").joinpath("assets", "reference", THRESHOLD_TABLE).is_file()
    assert not _threshold_table().flags.writeable
    th = fscore_thresholds()
    th[0] = 0.5  # a caller's copy: the table the metric uses is unchanged
    assert fscore_thresholds()[0] == 0.0


# thresholds where the scalar linspace formula is one float32 ulp away from torch's CPU kernel
ULP_OFF = [143, 144, 145, 146, 147, 148, 149, 167, 168, 169, 170, 171, 172, 173, 207, 208, 209, 210, 236, 237]


def official_fcurve(prob, gt, beta2=0.3):
    """AVSBench `_eval_pr` + F for one frame, written as the official loop: positive at th iff prob >= th."""
    curve = []
    for th in fscore_thresholds():
        pos = (prob >= th).astype(np.float32)
        tp = np.float32((pos * gt).sum())
        prec, rec = tp / (np.float32(pos.sum()) + np.float32(1e-20)), tp / (np.float32(gt.sum()) + np.float32(1e-20))
        with np.errstate(invalid="ignore"):
            f = np.float32(1 + beta2) * prec * rec / (np.float32(beta2) * prec + rec)
        curve.append(0.0 if np.isnan(f) else f)
    return np.array(curve, np.float32)


@pytest.mark.parametrize("index", [0, 1, 100, *ULP_OFF, 253, 254])
def test_a_probability_on_a_threshold_counts_as_positive_there(index):
    from caeav.metrics.avs import frame_fcurves

    th = fscore_thresholds()
    gt = np.array([[[1, 1], [0, 0]]])
    prob = np.array([[[th[index], 0.0], [0.0, 0.0]]], np.float32)  # one GT pixel exactly on threshold `index`
    curve = frame_fcurves(prob, gt, from_logits=False)[0]
    assert np.array_equal(curve, official_fcurve(prob[0], gt[0]))
    # at `index` (>=) the pixel is positive: P = 1, R = 1/2 (at threshold 0 all 4 pixels are: P = 1/2, R = 1);
    # above it nothing is positive (F = 0)
    expected = F(0.5, 1.0) if index == 0 else F(1.0, 0.5)
    assert curve[index] == pytest.approx(expected, abs=1e-6)
    if index < 254:
        assert curve[index + 1] == 0.0


def test_miou_non_empty_and_empty_ground_truth_frames():
    gt = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    logits = np.array([[[5, -5], [5, -5]], [[5, -5], [-5, 0.0]]], np.float32)  # logit 0 -> not > 0.5 -> off
    # frame 0: pred {(0,0),(1,0)}, GT {(0,0),(0,1)} -> inter 1, union 3 -> 1/3
    # frame 1: empty GT -> pixels where both are 0 / (H*W) = 3/4
    assert frame_iou(logits, gt).tolist() == pytest.approx([1 / 3, 3 / 4], abs=1e-7)
    assert video_miou(logits, gt) == pytest.approx((1 / 3 + 3 / 4) / 2, abs=1e-7)


def F(p, r, b2=0.3):
    return (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0


def test_fscore_threshold_zero_marks_everything_positive():
    gt = np.array([[[1, 1], [0, 0]]])
    # an all-negative prediction still scores at threshold 0 (prob 0 >= 0): P = 2/4, R = 1 -> 1.3*0.5/(0.15+1) = 0.5652
    assert video_fscore(np.zeros((1, 2, 2)), gt, from_logits=False) == pytest.approx(F(0.5, 1.0), abs=1e-6)
    assert video_fscore(np.full((1, 2, 2), -100.0), gt) == pytest.approx(0.565217, abs=1e-6)


def test_fscore_takes_the_max_of_the_mean_curve_per_video():
    gt = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    prob = np.array([[[0.9, 0.2], [0.2, 0.0]], [[0.1, 0.0], [0.0, 0.0]], [[0.7, 0.7], [0.7, 0.7]]], np.float32)
    # frame A curve: th 0 -> F(1/2, 1); 0 < th <= 0.2 -> F(2/3, 1); 0.2 < th <= 0.9 -> F(1, 1/2); above -> 0
    assert video_fscore(prob[:1], gt[:1], from_logits=False) == pytest.approx(F(1, 0.5), abs=1e-6)  # 0.8125
    # frame B curve: th 0 -> F(1/4, 1); 0 < th <= 0.1 -> F(1, 1) = 1; above -> 0
    # frame C has an empty GT: skipped.  Mean curve maximum is at 0 < th <= 0.1: (F(2/3, 1) + 1) / 2 = 0.8611,
    # not the mean of the per-frame maxima (0.8125 + 1) / 2 = 0.90625
    assert video_fscore(prob, gt, from_logits=False) == pytest.approx((F(2 / 3, 1) + 1) / 2, abs=1e-6)


def test_fscore_video_without_ground_truth_scores_zero_and_counts_in_the_mean():
    gt0 = np.zeros((2, 2, 2))
    assert video_fscore(np.ones((2, 2, 2)), gt0, from_logits=False) == 0.0
    gt1 = np.array([[[1, 1], [0, 0]]])
    scores = avs_scores([(np.full((1, 2, 2), -100.0), gt1), (np.full((2, 2, 2), -100.0), gt0)])
    # F: (0.565217 + 0) / 2; mIoU: (0/2 + (4/4 + 4/4)/2) / 2 = 0.5
    assert scores["fscore"] == pytest.approx(F(0.5, 1.0) / 2, abs=1e-6)
    assert scores["miou"] == pytest.approx(0.5, abs=1e-7)


# ---------------------------------------------------------------- AVQA


def test_avqa_pooled_modalities_and_overall():
    types = [("Audio", "Counting"), ("Audio", "Counting"), ("Audio", "Comparative"), ("Visual", "Counting"),
             ("Audio-Visual", "Temporal")]
    target = np.array([0, 1, 2, 3, 4])
    pred = np.array([0, 9, 2, 3, 9])  # right, wrong, right, right, wrong
    out = avqa_accuracy(pred, target, types)
    assert out["audio_counting"] == 50.0 and out["audio_comparative"] == 100.0
    assert out["audio"] == pytest.approx(200 / 3)  # pooled 2 of 3, not the mean of 50 and 100
    assert out["visual_counting"] == 100.0 and out["visual"] == 100.0
    assert out["av_temporal"] == 0.0 and out["av"] == 0.0
    assert out["overall"] == 60.0
    assert math.isnan(out["visual_location"]) and math.isnan(out["av_existential"])  # empty buckets
    logits = np.eye(10)[pred]
    assert avqa_accuracy(logits, target, types) == pytest.approx(out, nan_ok=True)


def test_avqa_rejects_unknown_types_and_mismatched_lengths():
    with pytest.raises(ValueError):
        avqa_accuracy([0], [0], [("Audio", "Location")])
    with pytest.raises(ValueError):
        avqa_accuracy([0, 1], [0, 1], [("Audio", "Counting")])
