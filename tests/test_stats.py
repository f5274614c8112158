"""Hills and paired statistics (issues 10, 21): the hill definition on synthetic curves; the paired tests against scipy; the
interval's coverage and Holm's family-wise error rate, measured by small seeded simulations."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from adam_implicit_bias.stats import (PairedDifference, family_error_rate, find_hill, hill_window, holm, holm_reachable,
                                      interval_coverage, judge_family, min_sign_flip_p, paired_difference, paired_interval,
                                      seeds_needed, sign_flip_p, smooth, t_interval, verdict)

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
        assert sign_flip_p(np.arange(1.0, k + 1)) == pytest.approx(2 / 2 ** k) == min_sign_flip_p(k)


def test_t_interval_matches_scipy():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.4, 0.25])
    ref = sps.ttest_1samp(d, 0).confidence_interval(0.95)
    assert t_interval(d) == pytest.approx((ref.low, ref.high))
    assert paired_interval(d[:3]) == t_interval(d[:3])          # below 5 seeds the figures' interval is the t-interval


@pytest.mark.parametrize('n, dist, lo, hi', [(2, 'normal', 0.935, 0.965),     # the t-interval at the ci scale's 2 seeds: exact
                                             (8, 'normal', 0.925, 0.975),     # the bootstrap-t at the cpu scale's seed counts
                                             (10, 'exponential', 0.91, 0.975)])
def test_measured_coverage_of_the_interval(n, dist, lo, hi):
    "The interval covers the true mean about 95% of the time where the notebook says it does (1,000 seeded experiments)."
    reps = 4000 if n < 5 else 1000
    assert lo <= interval_coverage(n, dist, reps=reps, resamples=499, seed=1) <= hi


def test_the_bootstrap_t_is_finite_with_tied_differences():
    "Accuracy differences are multiples of 1/2000 and tie; a resample whose spread is rounding noise must not blow the interval up."
    a = [0.2505, 0.2345, 0.2535, 0.2335, 0.222]                      # the search's D2, best test accuracy at rho = 0.99 ...
    b = [0.2505, 0.234, 0.253, 0.2315, 0.2215]                       # ... and 0.999: differences 0, -0.0005 (x3), -0.002
    d = paired_difference(a, b)
    assert -0.0025 < d.lo <= d.mean <= d.hi <= 0.0005 and d.p == pytest.approx(0.125)


def test_holm_adjusts_as_defined():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])   # sorted: 4·0.005, 3·0.01, max(., 2·0.03), max(., 1·0.04)
    adj = holm([0.2, np.nan, 0.01])
    assert math.isnan(adj[1]) and adj[[0, 2]] == pytest.approx([0.2, 0.02])


def test_holm_controls_the_family_wise_error_rate():
    "Six true-null comparisons of 8 seeds: uncorrected, about a quarter of the families have a false call; with Holm, at most α."
    assert family_error_rate(6, 8, reps=1000, correct=False, seed=2) > 0.15
    assert family_error_rate(6, 8, reps=1000, seed=2) <= 0.05 + 0.02


def test_seeds_needed_for_a_family_to_be_able_to_pass():
    assert [seeds_needed(k) for k in (1, 2, 3, 6, 7, 12, 13)] == [6, 7, 7, 8, 9, 9, 10]
    assert holm_reachable(8, 6) and not holm_reachable(8, 7) and not holm_reachable(5, 1)


def comparison(shift, n=8, primary=True, expected=+1):
    return dict(paired_difference(np.zeros(n), shift + 0.05 * np.arange(n))._asdict(), expected=expected, primary=primary)


def test_only_primaries_get_a_verdict_and_holm_runs_over_them():
    fam = judge_family([comparison(1.0), comparison(-1.0), comparison(0.01, primary=False), comparison(1.0, n=5)])
    assert [c['verdict'] for c in fam] == ['as the paper', 'opposite to the paper', 'exploratory',
                                           'not distinguishable from noise at this scale']   # 5 seeds: 3 · 2/32 > 0.05
    assert [c['k'] for c in fam] == [3] * 4 and fam[0]['p_holm'] == pytest.approx(3 * 2 / 2 ** 8) and math.isnan(fam[2]['p_holm'])


def test_the_pairing_removes_the_seed_spread():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 10, 8); b = a + 1 + rng.normal(0, 0.1, 8)
    d = paired_difference(a, b)
    assert d.lo > 0 and d.p == pytest.approx(2 / 256) and verdict(d, +1, d.p) == 'as the paper'
    assert sps.ttest_ind(a, b).pvalue > 0.5   # unpaired, the same numbers show nothing


def test_missing_values_are_dropped_per_seed():
    d = paired_difference([1.0, np.nan, 3.0, 4.0], [2.0, 5.0, np.nan, 5.5])
    assert d.n == 2 and d.mean == pytest.approx(1.25)


@pytest.mark.parametrize('d, expected, p_adj, said', [
    (PairedDifference(8, 1.0, 0.5, 1.5, 0.0078), +1, 0.02, 'as the paper'),
    (PairedDifference(8, 1.0, 0.5, 1.5, 0.0078), -1, 0.02, 'opposite to the paper'),
    (PairedDifference(8, -1.0, -1.5, -0.5, 0.0078), -1, 0.05, 'as the paper'),
    (PairedDifference(8, 1.0, 0.5, 1.5, 0.0078), +1, 0.06, 'not distinguishable from noise at this scale'),  # the correction decides
    (PairedDifference(1, 1.0, math.nan, math.nan, math.nan), +1, math.nan, 'too few paired seeds to tell'),
])
def test_verdict(d, expected, p_adj, said):
    assert verdict(d, expected, p_adj) == said


def test_smooth_keeps_length_and_constants():
    for n in (1, 2, 6, 101):
        assert smooth(np.full(n, 3.0), 7).shape == (n,) and np.allclose(smooth(np.full(n, 3.0), 7), 3.0)
