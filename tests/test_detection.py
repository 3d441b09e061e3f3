"""Detection metrics come from continuous scores with one direction; DER and the MAD anomaly index."""
import numpy as np
import pytest

from snnsec.detection import defense_effectiveness_rate, detection, mad_anomaly_index


def test_detection_counts_and_auroc_by_hand():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.1, 0.2])
    positive = np.array([1, 1, 1, 0, 0, 0], bool)
    flagged = scores > 0.5
    d = detection(scores, positive, flagged)
    assert (d.positives, d.negatives, d.flagged) == (3, 3, 3)
    assert d.tpr == pytest.approx(2 / 3) and d.fpr == pytest.approx(1 / 3)
    # pairs (pos, neg) ranked correctly: 0.9 and 0.8 beat all 3 negatives, 0.3 beats 0.1 and 0.2 -> 8 of 9
    assert d.auroc == pytest.approx(8 / 9)


def test_auroc_uses_scores_not_flags():
    positive = np.array([1, 0, 1, 0], bool)
    nothing_flagged = np.zeros(4, bool)
    assert detection(np.array([4.0, 1.0, 3.0, 2.0]), positive, nothing_flagged).auroc == 1.0
    assert detection(np.array([1.0, 4.0, 2.0, 3.0]), positive, nothing_flagged).auroc == 0.0  # direction matters


def test_auroc_undefined_with_one_kind_of_item():
    d = detection(np.array([0.1, 0.2]), np.array([True, True]), np.array([False, True]))
    assert d.auroc is None and d.fpr is None and d.tpr == 0.5


def test_non_finite_scores_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        detection(np.array([np.nan, 1.0]), np.array([True, False]), np.array([False, False]))


def test_der():
    assert defense_effectiveness_rate(0.9, 1.0, 0.9, 1.0) == 0.5  # no effect
    assert defense_effectiveness_rate(0.9, 1.0, 0.9, 0.0) == 1.0  # backdoor gone, accuracy kept
    assert defense_effectiveness_rate(0.9, 1.0, 0.5, 0.0) == pytest.approx(0.8)
    assert defense_effectiveness_rate(0.9, 0.5, 0.95, 0.9) == 0.5  # gains do not count


def test_mad_anomaly_index_points_one_way():
    norms = np.array([10.0, 11.0, 9.0, 10.5, 9.5, 2.0])
    low = mad_anomaly_index(norms, low_is_anomalous=True)
    assert np.argmax(low) == 5 and low[5] > 2 and (low[:5] < 2).all()
    high = mad_anomaly_index(norms, low_is_anomalous=False)
    assert high[5] < 0
