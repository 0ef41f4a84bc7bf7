import pytest

from ddpmlab.data.synthetic import synthetic_shapes
from ddpmlab.images import uint8_to_model


@pytest.fixture
def shapes_batch():
    """16 synthetic 16×16 RGB shapes in [-1, 1]."""
    images, _, _ = synthetic_shapes(16, 16, 3, seed=0)
    return uint8_to_model(images)
