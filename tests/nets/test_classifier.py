"""The FD classifier's shapes, its batch-independent features and its spec round trip."""

import torch

from ddpmlab.nets import Classifier, ClassifierSpec


def test_shapes_and_feature_dim():
    model = Classifier(in_channels=3, image_size=16, num_classes=4, feature_dim=96)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    assert model.feature_dim == 96 and model.num_classes == 4
    assert model.features(x).shape == (5, 96)
    assert model(x).shape == (5, 4)


def test_fashion_mnist_size_is_small():
    model = Classifier(in_channels=1, image_size=28, num_classes=10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model.features(torch.zeros(2, 1, 28, 28)).shape == (2, model.feature_dim) and 128 <= model.feature_dim <= 256
    size_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert size_bytes < 2 * 2**20  # shipped inside the package


def test_features_do_not_depend_on_batch_or_mode():
    # GroupNorm normalises each image alone: an image's features are the same in any batch, train or eval
    torch.manual_seed(0)
    model = Classifier(in_channels=1, image_size=28, num_classes=10)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    whole = model.train().features(x)
    torch.testing.assert_close(model.eval().features(x[2:4]), whole[2:4], rtol=1e-5, atol=1e-6)


def test_from_spec_rebuilds_the_same_network():
    torch.manual_seed(0)
    model = Classifier(in_channels=3, image_size=16, num_classes=4, widths=(8, 16), feature_dim=32, groups=4)
    copy = Classifier.from_spec(model.spec)
    copy.load_state_dict(model.state_dict())
    assert copy.spec == model.spec == ClassifierSpec(3, 16, 4, [8, 16], 32, 4)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)
