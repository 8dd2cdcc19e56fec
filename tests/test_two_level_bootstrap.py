"""The two-level bootstrap (training seeds, then test subjects) of :mod:`harness.report.bootstrap` against closed forms.

Setup: K seeds, S subjects with one item each, the metric of seed k is the mean of its per-subject values x[k, i].
One resample is ``T = a' X b`` with ``a = c / K`` (c ~ Multinomial(K, 1/K), the seed draw) and ``b = w / S``
(w ~ Multinomial(S, 1/S), the subject draw), a and b independent. With ``M_a = E[a a'] = (I - J/K)/K^2 + J/K^2`` and
``M_b`` alike, ``Var T = tr(X M_b X' M_a) - (mean of X)^2`` exactly: the seed part ``var_pop(seed means) / K``, the
subject part ``var_pop(seed-averaged subject values) / S`` and their interaction ``tr(X Sb X' Sa)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.report.bootstrap import (
    SubjectGroups,
    bootstrap_samples,
    paired_from_samples,
    seed_draws,
    two_level_bootstrap,
    two_level_samples,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class MeanOf:
    """The mean of per-item values over a resampled multiset (a linear statistic: closed forms exist)."""

    def __init__(self, values):
        self.values = np.asarray(values, np.float64)
        self.n = self.values.size

    def on_counts(self, counts):
        c = np.asarray(counts, np.float64)
        return float(c @ self.values / c.sum())


def _second_moment(n: int) -> np.ndarray:
    """E[b b'] for b = Multinomial(n, 1/n) / n."""
    return (np.eye(n) - np.ones((n, n)) / n) / n**2 + np.ones((n, n)) / n**2


def closed_form_var(x: np.ndarray) -> float:
    k, s = x.shape
    return float(np.trace(x @ _second_moment(s) @ x.T @ _second_moment(k)) - x.mean() ** 2)


def _fit(x: np.ndarray, n_boot: int, seed: int = 0, seeds=None):
    k, s = x.shape
    seeds = list(range(k)) if seeds is None else seeds
    groups = SubjectGroups.from_ids(np.arange(s))
    return two_level_bootstrap(groups, {"m": {sd: MeanOf(x[j]) for j, sd in enumerate(seeds)}}, n_boot, seed)["m"]


def test_two_level_std_matches_the_closed_form():
    rng = np.random.default_rng(0)
    k, s = 5, 40
    seed_means = np.array([-0.1, -0.05, 0.0, 0.05, 0.1])  # between-seed variance 0.005
    x = seed_means[:, None] + rng.normal(0.0, 0.1, (1, s)) + rng.normal(0.0, 0.05, (k, s))  # shared subject effects
    res = _fit(x, 20000)
    got = float(np.std(res.samples["__value__"]))
    want = closed_form_var(x) ** 0.5
    assert abs(got - want) / want < 0.03, (got, want)
    assert res.estimate["__value__"] == pytest.approx(x.mean())
    # the seed part matters here: the subject-only bootstrap of the seed mean is clearly narrower
    one_level = bootstrap_samples(SubjectGroups.from_ids(np.arange(s)), {"m": MeanOf(x.mean(axis=0))}, 20000, 0)["m"]
    assert np.std(one_level.samples["__value__"]) < 0.8 * got


def test_zero_within_seed_variance_is_the_plain_seed_bootstrap():
    m = np.array([0.61, 0.55, 0.70, 0.58])
    x = np.repeat(m[:, None], 25, axis=1)
    res = _fit(x, 4000, seed=3, seeds=[7, 2, 9, 4])
    counts = seed_draws([7, 2, 9, 4], 4000, 3)
    np.testing.assert_allclose(res.samples["__value__"], counts @ m / 4, rtol=0, atol=1e-12)
    var_pop = float(np.mean((m - m.mean()) ** 2))
    assert closed_form_var(x) == pytest.approx(var_pop / 4)
    assert abs(np.var(res.samples["__value__"]) - var_pop / 4) / (var_pop / 4) < 0.08


def test_one_seed_is_the_subject_bootstrap_and_draws_pair_by_seed_number():
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 0.1, (1, 30))
    g = SubjectGroups.from_ids(np.arange(30))
    plain = bootstrap_samples(g, {"m": MeanOf(x[0])}, 500, 5)["m"]
    assert np.array_equal(_fit(x, 500, seed=5).samples["__value__"], plain.samples["__value__"])
    # the same seed numbers in another order: column j still belongs to seed seeds[j]
    a, b = seed_draws([0, 1, 2], 300, 0), seed_draws([2, 0, 1], 300, 0)
    assert np.array_equal(a[:, [2, 0, 1]], b) and np.all(a.sum(axis=1) == 3)
    assert not np.array_equal(seed_draws([0, 1, 2], 300, 0), seed_draws([0, 1, 3], 300, 0))
    with pytest.raises(ValueError, match="repeat"):
        seed_draws([1, 1], 10)


def test_paired_difference_pairs_seeds_by_number_and_cancels_a_shared_seed_effect():
    """Method B = method A + 0.02 on every seed and subject: the seed effect and the subject effects cancel in the
    paired difference (exactly 0.02 on every resample), while each method's own interval is wide."""
    rng = np.random.default_rng(2)
    xa = rng.normal(0.0, 0.1, (3, 1)) + rng.normal(0.5, 0.2, (1, 30)) + rng.normal(0, 0.03, (3, 30))
    g = SubjectGroups.from_ids(np.arange(30))
    res = two_level_bootstrap(
        g, {"a": {s: MeanOf(xa[s]) for s in range(3)}, "b": {s: MeanOf(xa[s] + 0.02) for s in range(3)}}, 2000, 0
    )
    d = paired_from_samples(res["b"], res["a"]).diff
    np.testing.assert_allclose(d.samples, 0.02, atol=1e-12)
    assert res["a"].samples["__value__"].std() > 0.02
    # undefined on a resample where a drawn seed is undefined; a seed that is not drawn does not count
    s0 = bootstrap_samples(g, {s: MeanOf(xa[s]) for s in range(3)}, 200, 0)
    s0[1].samples["__value__"][:] = np.nan
    out = two_level_samples([s0[0], s0[1], s0[2]], [0, 1, 2]).samples["__value__"]
    drawn = seed_draws([0, 1, 2], 200, 0)[:, 1] > 0
    assert np.all(np.isnan(out[drawn])) and np.all(np.isfinite(out[~drawn])) and (~drawn).any()
