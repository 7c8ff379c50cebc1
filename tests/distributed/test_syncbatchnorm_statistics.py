"""SyncBatchNorm's combination of per-rank statistics (one process: the formula alone)."""
import numpy as np

from lucid.nn.modules.syncbatchnorm import combine_moments


def test_chan_combination_equals_the_two_pass_statistics_of_the_union():
    rng = np.random.default_rng(0)
    # far from zero and of unequal sizes: E[x^2] - E[x]^2 would lose most digits of the variance
    groups = [1e6 + rng.standard_normal((n, 3)) * [1e-2, 1.0, 1e2] for n in (5, 17, 2)]
    counts = np.array([[len(g)] * 3 for g in groups], float)
    means = np.array([g.mean(axis=0) for g in groups])
    m2s = np.array([((g - g.mean(axis=0)) ** 2).sum(axis=0) for g in groups])
    count, mean, m2 = combine_moments(counts, means, m2s)
    union = np.concatenate(groups)
    np.testing.assert_array_equal(count, [24, 24, 24])
    np.testing.assert_allclose(mean, union.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(m2 / count, union.var(axis=0), rtol=1e-9)
