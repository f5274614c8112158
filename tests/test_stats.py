"Hills and paired statistics (issue 10): the hill definition on synthetic curves, and the paired tests against scipy."
import math

import numpy as np
import pytest
from scipy import stats as sps

from adam_implicit_bias.stats import (PairedDifference, find_hill, hill_window, paired_difference, sign_flip_p, smooth,
                                      verdict)

T = np.arange(3000)
FALL = 80 * np.exp(-T / 40) + 5


def bump(top, height, width=200): return height * np.exp(-((T - top) / width) ** 2)


def noisy(y, sigma=0.01, seed=0): return y * np.exp(np.random.default_rng(seed).normal(0, sigma, len(y)))


@pytest.mark.parametrize('seed', range(5))
def test_pure_decay_has_no_hill(seed):
    h = find_hill(noisy(FALL, seed=seed))
    assert math.isnan(h.peak) and h.epoch == -1 and h.reason == 'the curve only falls'


@pytest.mark.parametrize('seed', range(5))
def test_monotone_rise_has_no_hill(seed):
    h = find_hill(noisy(FALL + 30 * T / len(T), seed=seed))
    assert math.isnan(h.peak) and h.reason == 'the curve rises to its last epochs'


@pytest.mark.parametrize('top', [400, 1500, 2500])
@pytest.mark.parametrize('seed', range(3))
def test_noisy_hill_is_found_where_it_is(top, seed):
    h = find_hill(noisy(FALL + bump(top, 20), sigma=0.02, seed=seed))
    assert abs(h.epoch - top) < 60 and h.peak == pytest.approx(25, rel=0.03) and h.hills == 1 and h.reason == ''


def test_of_two_hills_the_higher_is_the_peak():
    h = find_hill(noisy(FALL + bump(800, 12) + bump(2000, 30)))
    assert h.hills == 2 and abs(h.epoch - 2000) < 60 and h.peak == pytest.approx(35, rel=0.03)
    h = find_hill(noisy(FALL + bump(800, 30) + bump(2000, 12)))
    assert h.hills == 2 and abs(h.epoch - 800) < 60


def test_the_initial_period_and_the_last_epochs_are_not_hills():
    assert math.isnan(find_hill(noisy(FALL + bump(10, 40, width=5))).peak)             # a spike in the first epochs
    end = noisy(FALL + bump(len(T) - 5, 30, width=100))                                   # cut off while rising
    assert math.isnan(find_hill(end).peak)


def test_a_bump_below_the_noise_is_not_a_hill():
    clean = FALL + bump(1500, 0.5)                                                       # +10% on the floor of 5
    assert find_hill(clean).hills == 1
    assert math.isnan(find_hill(noisy(clean, sigma=0.08)).peak)                           # within 8% noise: not a hill


def test_noise_estimate_and_window():
    h = find_hill(noisy(FALL + bump(1500, 20), sigma=0.03))
    assert h.noise == pytest.approx(0.03, rel=0.15)
    assert hill_window(100) == 5 and hill_window(3000) == 61 and hill_window(3000) % 2 == 1


def test_bad_curves_are_refused():
    for bad in ([], [1.0, -1.0, 2.0], [1.0, float('nan')]):
        with pytest.raises(ValueError, match='curve must be non-empty, positive and finite'): find_hill(bad)


@pytest.mark.parametrize('k', [3, 5, 7, 9])
def test_sign_flip_p_matches_scipy_exact_permutation_test(k):
    rng = np.random.default_rng(k)
    for _ in range(10):
        d = rng.normal(0.3, 1, k)
        ref = sps.permutation_test((d,), np.mean, permutation_type='samples', n_resamples=np.inf,
                                   alternative='two-sided').pvalue
        assert sign_flip_p(d) == pytest.approx(ref, abs=1e-12)


def test_smallest_attainable_p():
    for k in (3, 4, 5, 6, 8):
        assert sign_flip_p(np.arange(1.0, k + 1)) == pytest.approx(2 / 2 ** k)


def test_paired_difference_interval_covers_a_known_mean():
    "Over many synthetic experiments with 8 seeds, the 95% interval covers the true mean difference most of the time."
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(200):
        a = rng.normal(0, 5, 8); b = a + 0.4 + rng.normal(0, 0.3, 8)   # seed spread 5, paired effect 0.4 ± 0.3
        d = paired_difference(a, b, seed=i)
        covered += d.lo <= 0.4 <= d.hi
        assert d.n == 8 and d.mean == pytest.approx(np.mean(b - a))
    assert covered / 200 > 0.85   # BCa with 8 points is a little narrow, as the notebook says


def test_the_pairing_removes_the_seed_spread():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 10, 6); b = a + 1 + rng.normal(0, 0.1, 6)
    d = paired_difference(a, b)
    assert d.lo > 0 and d.p == pytest.approx(2 / 64) and verdict(d, +1) == 'as the paper'
    assert sps.ttest_ind(a, b).pvalue > 0.5   # unpaired, the same numbers show nothing


def test_missing_values_are_dropped_per_seed():
    d = paired_difference([1.0, np.nan, 3.0, 4.0], [2.0, 5.0, np.nan, 5.5])
    assert d.n == 2 and d.mean == pytest.approx(1.25)


@pytest.mark.parametrize('d, expected, said', [
    (PairedDifference(6, 1.0, 0.5, 1.5, 0.03), +1, 'as the paper'),
    (PairedDifference(6, 1.0, 0.5, 1.5, 0.03), -1, 'opposite to the paper'),
    (PairedDifference(6, -1.0, -1.5, -0.5, 0.03), -1, 'as the paper'),
    (PairedDifference(6, 0.2, -0.1, 0.5, 0.4), +1, 'not distinguishable from noise at this scale'),
    (PairedDifference(3, 1.0, 0.5, 1.5, 0.25), +1, 'not distinguishable from noise at this scale'),   # CI alone is not enough
    (PairedDifference(1, 1.0, math.nan, math.nan, math.nan), +1, 'too few paired seeds to tell'),
])
def test_verdict(d, expected, said):
    assert verdict(d, expected) == said


def test_smooth_keeps_length_and_constants():
    for n in (1, 2, 6, 101):
        assert smooth(np.full(n, 3.0), 7).shape == (n,) and np.allclose(smooth(np.full(n, 3.0), 7), 3.0)
