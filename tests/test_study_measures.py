"""The studies' measures on inputs whose answer is known: these controls must pass before any model is judged
by them (the prior-sampling report shows the same controls)."""

from __future__ import annotations

import math

import torch

from vaezoo.core.intervals import proportion_interval
from vaezoo.studies.intervals import direction, paired, t_interval
from vaezoo.studies.measures import knn_accuracy, mmd_test, nn_distance, prior_mmd, prior_mmd_controls, prior_mmd_null


def test_prior_mmd_controls_exact_prior_scores_near_zero_and_wide_or_narrow_codes_far():
    for d in (4, 8, 32):
        controls = prior_mmd_controls(d, torch.Generator().manual_seed(d), n=400, permutations=100)
        assert abs(controls["N(0, I)"]["mmd2"]) < 0.01
        assert controls["N(0, 21 I)"]["mmd2"] > 0.3 and controls["N(0, 0.01 I)"]["mmd2"] > 0.1
        assert controls["N(0, 21 I)"]["p_value"] < 0.02 and controls["N(0, 0.01 I)"]["p_value"] < 0.02
        assert controls["half the units 0"]["mmd2"] > 5 * abs(controls["N(0, I)"]["mmd2"])


def test_prior_mmd_permutation_p_value_is_calibrated_under_the_null():
    # 40 fixed-seed tests of exact N(0, I) codes: about 5% reject at 0.05 (a real property: an uncalibrated
    # p-value, e.g. one that forgot the observed statistic or compared the wrong tail, fails this)
    g = torch.Generator().manual_seed(3)
    ps = torch.tensor([prior_mmd(torch.randn(200, 6, generator=g), g, n=150, permutations=40)["p_value"] for _ in range(40)])
    assert int((ps <= 0.05).sum()) <= 6
    assert 0.3 < float(ps.mean()) < 0.7


def test_the_repeated_exact_prior_control_sees_the_size_a_fixed_draw_cannot_and_a_biased_test_fails_it():
    null = prior_mmd_null(6, torch.Generator().manual_seed(5), repeats=20, n=150, permutations=40)
    assert null["rejected"]["lo"] <= 0.05 <= null["rejected"]["hi"] and null["mmd2"]["lo"] < 0 < null["mmd2"]["hi"]
    # the same criterion on a known-bad case: codes N(0, 1.3^2 I) are rejected far more often than 5%
    g = torch.Generator().manual_seed(5)
    wide = [prior_mmd(1.3 * torch.randn(150, 6, generator=g), g, 150, 40)["p_value"] < 0.05 for _ in range(20)]
    assert proportion_interval(sum(wide), 20)["lo"] > 0.05


def test_the_exact_proportion_interval_covers_the_true_share_at_its_level():
    # 400 binomial experiments at p = 0.05, n = 20 (a test's size): Clopper-Pearson covers at >= 95% (it is
    # conservative); a normal-approximation interval covers far less here, which is why it is not used
    g = torch.Generator().manual_seed(0)
    hits = (torch.rand(400, 20, generator=g) < 0.05).sum(1).tolist()
    covered = [(lambda iv: iv["lo"] <= 0.05 <= iv["hi"])(proportion_interval(h, 20)) for h in hits]
    assert sum(covered) / 400 >= 0.95
    assert proportion_interval(0, 20)["lo"] == 0.0 and proportion_interval(20, 20)["hi"] == 1.0
    assert abs(proportion_interval(1, 20)["hi"] - 0.2487) < 1e-3  # the textbook value for 1 of 20


def test_mmd_grows_with_the_distance_between_two_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g)
    values = [mmd_test(x, torch.randn(300, 4, generator=g) + shift, 4.0, 20, g)["mmd2"] for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 0.01 < values[1]


def test_nn_distance_is_zero_on_the_reference_and_the_offset_otherwise():
    ref = torch.eye(5)
    assert nn_distance(ref, ref) == 0.0
    assert abs(nn_distance(ref + 0.1, ref) - 0.1 * 5**0.5) < 1e-6  # every row moved by 0.1 in each of 5 coordinates


def test_knn_accuracy_identity_on_separated_classes_is_one_and_a_constant_is_chance():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(30)
    centres = 10 * torch.randn(10, 6, generator=g)
    feats = centres[labels] + torch.randn(300, 6, generator=g)
    test_labels = torch.arange(10).repeat(10)
    test_feats = centres[test_labels] + torch.randn(100, 6, generator=g)
    assert knn_accuracy(feats, labels, test_feats, test_labels) == 1.0
    constant = knn_accuracy(torch.zeros(300, 6), labels, torch.zeros(100, 6), test_labels)
    assert constant <= 0.2


def test_t_interval_and_paired_difference():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv["mean"] == 2.0 and abs(iv["hi"] - 2.0 - 4.302652729911275 / 3**0.5) < 1e-9  # t_{0.975, 2} = 4.3027
    assert direction(paired([2.0, 3.0, 4.0], [1.0, 2.1, 2.9])) == "above"
    assert direction(paired([1.0, 2.0, 3.0], [1.1, 1.9, 3.0])) == "zero"


def test_mig_controls_the_factors_score_near_one_rotated_copied_constant_and_noise_codes_near_zero():
    from vaezoo.data.shapes import factor_grid
    from vaezoo.studies.disentanglement import mig_controls

    for seed in (0, 1):
        c = mig_controls(factor_grid(), seed=seed)
        assert c["the factors + 4 noise units"] > 0.95
        assert c["the factors rotated 45 degrees in pairs"] < 1e-9 and c["each factor copied into two units"] < 1e-9
        assert c["constant"] == 0.0 and c["pure noise"] < 0.02
        assert c["random rotations of the factors (mean of 10)"] < 0.3


def test_mig_per_factor_gap_finds_the_unit_and_bad_input_is_refused():
    import numpy as np
    import pytest

    from vaezoo.studies.disentanglement import discrete_mi, entropy, mig

    rng = np.random.default_rng(0)
    f = rng.integers(0, 5, size=(2000, 2))
    codes = np.stack([rng.standard_normal(2000), f[:, 1] + 0.01 * rng.standard_normal(2000), f[:, 0] * 3.0], 1)
    out = mig(codes, f)
    assert out["top_unit"] == [2, 1] and min(out["gaps"]) > 0.95
    assert abs(discrete_mi(f[:, 0], f[:, 0]) - entropy(f[:, 0])) < 1e-12 and abs(entropy(f[:, 0]) - np.log(5)) < 0.01
    with pytest.raises(ValueError, match="same N"):
        mig(codes[:10], f)
    with pytest.raises(ValueError, match="entropy is 0"):
        mig(codes, np.zeros((2000, 1), dtype=int))


def test_the_intervals_over_seeds_cover_at_their_level_with_three_seeds():
    # every study's number is a t-interval over (usually 3) seeds; batch-size's B_simple band is one on the log scale.
    # 400 experiments of 3 draws each with a known centre: both cover at ~95% (a z-interval, or a t with the wrong
    # degrees of freedom, would cover ~75-85% at n = 3 and fail here)
    from vaezoo.studies.batch_size import log_interval

    g = torch.Generator().manual_seed(0)
    draws = 5.0 + 2.0 * torch.randn(400, 3, generator=g, dtype=torch.float64)
    covered = sum(iv["lo"] <= 5.0 <= iv["hi"] for iv in (t_interval(row.tolist()) for row in draws))
    assert 0.92 <= covered / 400 <= 0.98
    geometric = 700.0  # log-normal around a B_simple-like scale: the log-scale interval covers its geometric mean
    logged = [log_interval(torch.exp(math.log(geometric) + 0.8 * row / 2.0 - 0.8 * 5.0 / 2.0).tolist()) for row in draws]
    assert 0.92 <= sum(iv["lo"] <= geometric <= iv["hi"] for iv in logged) / 400 <= 0.98
    assert all(iv["lo"] > 0 for iv in logged)  # never below 0, which the raw-scale interval of a ratio can reach
