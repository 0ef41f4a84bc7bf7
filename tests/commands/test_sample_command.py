"""`ddpmlab sample --out DIR/`: a folder of samples holds one draw; earlier samples go only with --force, and images
ddpmlab did not write never."""

import pytest

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.store.manifest import MANIFEST_FILE
from ddpmlab.train import Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("sample") / "run"
    Trainer(load_config("tiny", ["train.steps=2", "train.sample_every=1000"]), run, progress=False).train()
    return run


def _sample(run, n, out, *flags):
    return main(["sample", str(run), "--n", str(n), "--steps", "2", "--out", f"{out}/", "--quiet", *flags])


def _pngs(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def test_a_folder_of_earlier_samples_is_refused_then_replaced_with_force(run, tmp_path, capsys):
    out = tmp_path / "d"
    assert _sample(run, 8, out) == 0
    capsys.readouterr()
    assert _sample(run, 3, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds 8 samples an earlier `ddpmlab sample` wrote; use --force" in err
    assert len(_pngs(out)) == 8
    assert _sample(run, 3, out, "--force") == 0
    assert _pngs(out) == ["000000.png", "000001.png", "000002.png"]  # no stale sample left for a metric to count
    assert (out / MANIFEST_FILE).is_file()


def test_images_ddpmlab_did_not_write_are_never_replaced(run, tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "000000.png").write_bytes(b"my own")
    (out / "notes.txt").write_text("kept")
    capsys.readouterr()
    for flags in ((), ("--force",)):
        assert _sample(run, 2, out, *flags) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "holds 1 image(s) that are not samples ddpmlab wrote (000000.png)" in err
    assert (out / "000000.png").read_bytes() == b"my own" and sorted(p.name for p in out.iterdir()) == [
        "000000.png", "notes.txt"]
    out_b = tmp_path / "b"
    out_b.mkdir()
    (out_b / "notes.txt").write_text("kept")  # other files do not stop it
    assert _sample(run, 2, out_b) == 0 and _pngs(out_b) == ["000000.png", "000001.png"]


@pytest.mark.parametrize("name", ["grid.png", "arrays.npz"])
def test_an_existing_file_is_replaced_only_with_force(run, tmp_path, capsys, name):
    out = tmp_path / name
    out.write_bytes(b"the user's own file")
    argv = ["sample", str(run), "--n", "2", "--steps", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: --out {out} exists; use --force to replace it, or choose another name\n"
    assert out.read_bytes() == b"the user's own file"
    assert main([*argv, "--force"]) == 0 and out.stat().st_size > 100


def test_a_grid_sampled_into_a_run_goes_with_the_runs_force_as_in_the_demo_run_twice(tmp_path):
    run, quick = tmp_path / "run", ["train.steps=1", "train.sample_every=1000", "train.val_every=1000", "--quiet"]
    assert main(["train", "tiny", "--run-dir", str(run), *quick]) == 0
    grid = run / "grid.png"
    sample = ["sample", str(run), "--n", "2", "--steps", "2", "--out", str(grid), "--quiet"]
    assert main(sample) == 0
    (run / "notes.txt").write_text("mine")
    assert main(["train", "tiny", "--run-dir", str(run), "--force", *quick]) == 0  # scripts/demo.sh, a second time
    assert not grid.exists() and (run / "notes.txt").read_text() == "mine"
    assert main(sample) == 0
