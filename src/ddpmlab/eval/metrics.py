"""Distances between feature sets: Fréchet distance, KID, and k-NN precision/recall."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from ddpmlab.errors import UserError


def _as_float64(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"expected features of shape N×D, got {features.shape}")
    return features


class FeatureStats:
    """Running first and second moments of N×D features, accumulated in float64 on the CPU.

    `extractor` names the network that produced the features (e.g. "inception-2015-12-05-pool3"),
    so cached reference statistics are never compared against features of another network.
    """

    def __init__(self, extractor: str = ""):
        self.extractor = extractor
        self.count = 0
        self.sum: np.ndarray | None = None
        self.sum_outer: np.ndarray | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> FeatureStats:
        """Add a batch of N×D features (tensor on any device, or array); returns self."""
        x = _as_float64(features)
        if self.sum is None:
            self.sum = np.zeros(x.shape[1])
            self.sum_outer = np.zeros((x.shape[1], x.shape[1]))
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_outer += x.T @ x
        return self

    def mean(self) -> np.ndarray:
        """The D-vector of feature means."""
        return self.sum / self.count

    def cov(self) -> np.ndarray:
        """The D×D unbiased covariance: (Σ x xᵀ − N·μ μᵀ) / (N − 1)."""
        mu = self.mean()
        return (self.sum_outer - self.count * np.outer(mu, mu)) / (self.count - 1)

    def to_dict(self) -> dict:
        """Plain numpy/str/int contents, the inverse of `from_dict`."""
        return {"count": self.count, "sum": self.sum, "sum_outer": self.sum_outer, "extractor": self.extractor}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureStats:
        """Rebuild statistics from `to_dict()` output (or a loaded .npz)."""
        stats = cls(str(data["extractor"]))
        stats.count = int(data["count"])
        stats.sum = np.asarray(data["sum"], dtype=np.float64)
        stats.sum_outer = np.asarray(data["sum_outer"], dtype=np.float64)
        return stats

    def save(self, path: str | Path) -> Path:
        """Write the statistics to `path` as an .npz file (no pickles); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, count=np.int64(self.count), sum=self.sum, sum_outer=self.sum_outer,
                     extractor=np.str_(self.extractor))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read statistics written by `save`; a missing or foreign file is a UserError."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_dict({key: data[key] for key in ("count", "sum", "sum_outer", "extractor")})
        except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as error:
            raise UserError(f"cannot read feature statistics {path}: {error}; "
                            "recompute them (delete the file to rebuild the cache)") from error


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as a Python float.

    Singular covariances (fewer samples than dimensions) are handled as pytorch-fid does: if the
    matrix square root is not finite, eps·I is added to both covariances. Round-off can make a
    near-zero result slightly negative; it is returned as computed, not clamped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    with warnings.catch_warnings():  # a singular product is expected here; the checks below guard accuracy
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = eps * np.eye(len(mu1))
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(sigma1·sigma2) has imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    # Heusel et al. 2017, Eq. 6: ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The KID kernel matrix k(x, y) = (x·y / d + 1)³ for rows of x and y."""
    # Bińkowski et al. 2018, Sec. 4 (KID)
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between equal-sized samples x and y (m rows each) under the KID kernel."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    # Gretton et al. 2012, Eq. 3: within-set sums skip i = j; the cross sum keeps all pairs
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(feats1, feats2, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: (mean, std) of unbiased MMD² over `num_subsets` random subsets drawn without replacement.

    `subset_size` is capped at the smaller set's size; std is over subsets (ddof=0), as torch-fidelity.
    """
    x, y = _as_float64(feats1), _as_float64(feats2)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    mmds = [mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
            for _ in range(num_subsets)]
    return float(np.mean(mmds)), float(np.std(mmds))


def _as_float32(features, device) -> torch.Tensor:
    features = torch.as_tensor(features).detach().to(device, torch.float32)
    if features.ndim != 2:
        raise ValueError(f"expected features of shape N×D, got {tuple(features.shape)}")
    return features


def knn_radii(feats: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance from each row of feats to its k-th nearest neighbour among the others (N,)."""
    if k >= len(feats):
        raise ValueError(f"k={k} needs more than {k} samples, got {len(feats)}")
    # k + 1 because each point is its own nearest neighbour at distance 0
    return torch.cat([torch.cdist(batch, feats).kthvalue(k + 1, dim=1).values for batch in feats.split(batch_size)])


PR_NEIGHBOURS = 3  # k of Kynkäänniemi et al. (2019): an image's manifold radius is its 3rd nearest neighbour's distance


def fraction_in_manifold(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor,
                         batch_size: int) -> float:
    """Fraction of queries within radii[j] of some support[j]: the k-NN manifold test."""
    # Kynkäänniemi et al. 2019, Eq. 1–2: f(φ, Φ) = 1 if ||φ − φ'|| ≤ NN_k(φ') for some φ' ∈ Φ
    inside = [(torch.cdist(batch, support) <= radii).any(dim=1) for batch in queries.split(batch_size)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real_feats, fake_feats, k: int = PR_NEIGHBOURS, batch_size: int = 1000,
                     device: str | torch.device = "cpu") -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), each in [0, 1].

    Precision: fraction of fakes inside the real k-NN manifold; recall: fraction of reals inside
    the fake one. Distances are computed in float32 on `device`, `batch_size` query rows at a time,
    so memory stays at batch_size × N.
    """
    real, fake = _as_float32(real_feats, device), _as_float32(fake_feats, device)
    real_radii, fake_radii = knn_radii(real, k, batch_size), knn_radii(fake, k, batch_size)
    precision = fraction_in_manifold(fake, real, real_radii, batch_size)
    recall = fraction_in_manifold(real, fake, fake_radii, batch_size)
    return precision, recall
