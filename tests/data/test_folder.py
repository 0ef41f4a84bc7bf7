"""Folders of image files: class subfolders, grayscale vs RGB, sizes, resizing."""

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab import UserError
from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset


def save(path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def folder_cfg(tmp_path, **overrides) -> DataConfig:
    return DataConfig(name="folder", path=str(tmp_path), val_fraction=0.0, **overrides)


def test_class_subfolders_in_sorted_order(tmp_path):
    rng = np.random.default_rng(0)
    cat = save(tmp_path / "cats" / "a.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    dog1 = save(tmp_path / "dogs" / "1.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    dog2 = save(tmp_path / "dogs" / "deeper" / "2.PNG", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    data = load_dataset(folder_cfg(tmp_path))
    assert (data.class_names, data.num_classes, data.labels.tolist()) == (["cats", "dogs"], 2, [0, 1, 1])
    expected = torch.from_numpy(np.stack([cat, dog1, dog2])).permute(0, 3, 1, 2)
    assert data.images.shape == (3, 3, 8, 8) and torch.equal(data.images, expected)  # PNG is lossless


def test_flat_grayscale_folder_is_unlabelled_one_channel(tmp_path):
    save(tmp_path / "b.png", np.full((6, 6), 200, np.uint8))
    save(tmp_path / "a.png", np.full((6, 6), 10, np.uint8))
    data = load_dataset(folder_cfg(tmp_path))
    assert (data.labels, data.num_classes, data.channels) == (None, 0, 1)
    assert data.images[:, 0, 0, 0].tolist() == [10, 200]  # sorted by path


def test_mixed_grayscale_and_colour_become_rgb(tmp_path):
    save(tmp_path / "a.png", np.full((4, 4), 77, np.uint8))
    save(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    data = load_dataset(folder_cfg(tmp_path))
    assert data.channels == 3 and data.images[0, :, 0, 0].tolist() == [77, 77, 77]


def test_different_sizes_need_image_size(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "b.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(UserError, match="images differ in size.*data.image_size"):
        load_dataset(folder_cfg(tmp_path))


def test_image_size_centre_crops_and_resizes(tmp_path):
    wide = np.zeros((8, 12, 3), np.uint8)
    wide[:, 2:10] = 90  # the centre 8×8 square
    save(tmp_path / "wide.png", wide)
    save(tmp_path / "small.png", np.full((2, 2, 3), 30, np.uint8))
    data = load_dataset(folder_cfg(tmp_path, image_size=4))
    assert data.images.shape == (2, 3, 4, 4)
    assert data.images[0].unique().tolist() == [30]  # small.png, upsampled
    assert data.images[1].unique().tolist() == [90]  # wide.png: only its centre square survives


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images"):
        load_dataset(folder_cfg(tmp_path))


def test_folder_has_no_test_split(tmp_path):
    save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="folder has no test split"):
        load_dataset(folder_cfg(tmp_path), "test")


# -- unreadable files: data.on_bad_image ------------------------------------------------------------------------
def _png_bytes(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


BAD_FILES = {  # name: bytes that are no readable image
    "truncated.png": _png_bytes(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))[:60],
    "empty.jpg": b"",
    "text.png": b"this is a text file, not an image\n",
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_an_unreadable_image_is_an_error_naming_it_by_default(tmp_path, bad):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / bad).write_bytes(BAD_FILES[bad])
    with pytest.raises(UserError, match=rf"{bad}: (not a readable image|cannot decode the image).*data.on_bad_image=skip"):
        load_dataset(folder_cfg(tmp_path))


def test_skip_leaves_unreadable_images_out_and_counts_them_in_one_warning(tmp_path):
    from ddpmlab.errors import DdpmlabWarning

    rng = np.random.default_rng(0)
    kept = {"cats/a.png": save(tmp_path / "cats" / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8)),
            "dogs/b.png": save(tmp_path / "dogs" / "b.png", rng.integers(0, 256, (8, 8), dtype=np.uint8)),
            "dogs/c.png": save(tmp_path / "dogs" / "c.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))}
    for name, data in BAD_FILES.items():  # the truncated PNG is RGB: skipped, it does not make the dataset RGB
        (tmp_path / ("cats" if name.startswith("t") else "dogs") / name).write_bytes(data)
    with pytest.warns(DdpmlabWarning) as caught:
        data = load_dataset(folder_cfg(tmp_path, on_bad_image="skip"))
    assert [str(w.message) for w in caught] == [
        f"skipped 3 unreadable images of 6 in {tmp_path}: cats/text.png, cats/truncated.png, dogs/empty.jpg "
        f"(data.on_bad_image=skip)"]
    assert (data.class_names, data.labels.tolist(), data.channels) == (["cats", "dogs"], [0, 1, 1], 1)
    assert torch.equal(data.images[:, 0], torch.from_numpy(np.stack(list(kept.values()))))


def test_skip_warns_once_per_process_and_the_cli_prints_one_line(tmp_path):
    import warnings

    from ddpmlab.cli import _format_warning
    from ddpmlab.errors import DdpmlabWarning

    for i in range(6):
        save(tmp_path / f"{i}.png", np.full((4, 4), i, np.uint8))
    (tmp_path / "x.png").write_bytes(b"")
    cfg = DataConfig(name="folder", path=str(tmp_path), val_fraction=0.5, on_bad_image="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own setting outside tests: a message is shown once per place
        train, val = load_dataset(cfg, "train"), load_dataset(cfg, "val")
    assert len(train) + len(val) == 6 and len([w for w in caught if w.category is DdpmlabWarning]) == 1
    assert _format_warning(caught[0].message, DdpmlabWarning, "folder.py", 1) == f"warning: {caught[0].message}\n"


def test_nothing_readable_is_an_error_even_when_skipping(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"none of its 2 image files could be read"):
        load_dataset(folder_cfg(tmp_path, on_bad_image="skip"))


def test_a_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    save(tmp_path / "a.png", np.zeros((64, 64), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # 64×64 is now above twice the limit
    with pytest.raises(UserError, match=r"a.png: not a readable image \(Image size .* exceeds limit"):
        load_dataset(folder_cfg(tmp_path))
