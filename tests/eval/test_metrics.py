import numpy as np
import pytest
import torch
from scipy import linalg

from ddpmlab import UserError
from ddpmlab.eval import metrics
from ddpmlab.eval.metrics import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall


def random_spd(rng, d, n=None):
    """Sample covariance of n Gaussian samples with a random mixing matrix (singular if n <= d)."""
    x = rng.normal(size=(n or 4 * d, d)) @ rng.normal(size=(d, d))
    return np.cov(x, rowvar=False)


def symmetric_frechet(mu1, s1, mu2, s2):
    """FD through Tr((S1½ S2 S1½)½), which needs only symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w.clip(0))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1).clip(0)
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(inner).sum()


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2, a, b = rng.normal(size=6), rng.normal(size=6), rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_identical_gaussians_is_zero():
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=16), random_spd(rng, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_frechet_distance_random_spd_pair_matches_symmetric_form():
    rng = np.random.default_rng(2)
    mu1, mu2, s1, s2 = rng.normal(size=20), rng.normal(size=20), random_spd(rng, 20), random_spd(rng, 20)
    expected = symmetric_frechet(mu1, s1, mu2, s2)
    assert expected > 1
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_singular_covariances_are_finite_and_correct():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    s1, s2 = random_spd(rng, 32, n=10), random_spd(rng, 32, n=12)
    assert np.linalg.matrix_rank(s1) == 9
    value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value)
    assert value == pytest.approx(symmetric_frechet(mu1, s1, mu2, s2), rel=1e-4)


def test_frechet_distance_falls_back_to_eps_offset_when_sqrtm_fails(monkeypatch):
    rng = np.random.default_rng(4)
    mu1, mu2, s1, s2 = rng.normal(size=5), rng.normal(size=5), random_spd(rng, 5), random_spd(rng, 5)
    calls, sqrtm = [], linalg.sqrtm

    def failing_once(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else sqrtm(a)

    monkeypatch.setattr(metrics.linalg, "sqrtm", failing_once)
    value = frechet_distance(mu1, s1, mu2, s2, eps=1e-2)
    offset = 1e-2 * np.eye(5)
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    # the offset enters only the square-root term, as in pytorch-fid
    expected = symmetric_frechet(mu1, s1 + offset, mu2, s2 + offset) - 2 * np.trace(offset)
    assert value == pytest.approx(expected, rel=1e-9)
    assert value != pytest.approx(symmetric_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_rejects_large_imaginary_part(monkeypatch):
    monkeypatch.setattr(metrics.linalg, "sqrtm", lambda a: np.eye(len(a)) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))


def test_feature_stats_streamed_equal_whole_array_moments(tmp_path):
    rng = np.random.default_rng(5)
    features = rng.normal(2.0, 3.0, size=(1003, 12)) @ rng.normal(size=(12, 12))
    stats = FeatureStats("toy-extractor")
    for i, batch in enumerate(np.array_split(features, 7)):
        stats.update(torch.from_numpy(batch) if i % 2 else batch)
    assert stats.count == 1003
    np.testing.assert_allclose(stats.mean(), features.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.cov(), np.cov(features, rowvar=False), rtol=0, atol=1e-10)

    loaded = FeatureStats.load(stats.save(tmp_path / "cache" / "ref.npz"))
    assert loaded.extractor == "toy-extractor" and loaded.count == 1003
    np.testing.assert_array_equal(loaded.sum, stats.sum)
    np.testing.assert_array_equal(loaded.sum_outer, stats.sum_outer)
    assert FeatureStats.from_dict(stats.to_dict()).cov().tolist() == stats.cov().tolist()


def test_feature_stats_load_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.npz"):
        FeatureStats.load(tmp_path / "missing.npz")


def test_fid_of_features_with_themselves_is_zero():
    features = np.random.default_rng(6).normal(size=(500, 16))
    stats = FeatureStats().update(features)
    assert abs(frechet_distance(stats.mean(), stats.cov(), stats.mean(), stats.cov())) < 1e-8


def brute_force_mmd2(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, written as the textbook double sums."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_brute_force_mmd_on_tiny_sets():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    # subset size = set size: every subset is the whole set, so every estimate is the same number
    for a, b in ((x, x), (x, y)):
        mean, std = kernel_inception_distance(a, b, num_subsets=4, subset_size=100)
        assert mean == pytest.approx(brute_force_mmd2(a, b), rel=1e-12) and std < 1e-12


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(8)
    real, other = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, std = kernel_inception_distance(real, other, num_subsets=20, subset_size=200)
    assert abs(mean) < 3 * std and abs(mean) < 0.02
    mean_shifted, std_shifted = kernel_inception_distance(real, other + 0.5, num_subsets=20, subset_size=200)
    assert mean_shifted > 0.5 and mean_shifted > 5 * std_shifted


def test_precision_recall_identical_and_disjoint_sets():
    features = torch.randn(300, 8, generator=torch.Generator().manual_seed(9))
    assert precision_recall(features, features.clone()) == (1.0, 1.0)
    assert precision_recall(features, features + 100) == (0.0, 0.0)


def test_precision_recall_hand_checked_1d_example():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[3.4], [4.5], [5.0], [30.0]])
    # k=2, excluding self: real radii [2, 1, 2, 9], fake radii [1.6, 1.1, 1.6, 25.5].
    # Precision: 3.4 is 1.4 from 2 (r=2); 4.5 and 5 are within 9 of 10; 30 is 20 from 10 → 3/4.
    # Recall: 0 and 1 are outside every fake ball; 2 is 1.4 from 3.4 (r=1.6); 10 is 20 from 30 (r=25.5) → 2/4.
    assert precision_recall(real, fake, k=2) == pytest.approx((0.75, 0.5))
    assert precision_recall(real, fake, k=2, batch_size=1) == pytest.approx((0.75, 0.5))


def test_precision_recall_does_not_depend_on_batch_size():
    generator = torch.Generator().manual_seed(10)
    real, fake = torch.randn(257, 6, generator=generator), 0.7 * torch.randn(190, 6, generator=generator) + 0.5
    whole = precision_recall(real, fake, k=5)
    assert 0 < whole[0] < 1 and 0 < whole[1] < 1
    assert precision_recall(real, fake, k=5, batch_size=16) == whole
