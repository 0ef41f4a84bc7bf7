"""`ddpmlab eval SAMPLES --reference REF` end to end, and a model scored against a chosen dataset split."""

import json
import shutil

import numpy as np
import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.commands.score import check_shapes, names_images
from ddpmlab.data import load_dataset
from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.eval.image_sources import image_source
from ddpmlab.images import save_images


def save_npz(path, images):
    np.savez(path, images=images.permute(0, 2, 3, 1).numpy())
    return path


@pytest.fixture
def sets(tmp_path, tiny_data):
    """Two sets of 32 tiny-preset images (A: train, B: val), each as a .npz and as a folder of PNGs."""
    a, b = load_dataset(tiny_data, "train").images[:32], load_dataset(tiny_data, "val").images[:32]
    paths = {}
    for name, images in (("a", a), ("b", b)):
        paths[f"{name}.npz"] = save_npz(tmp_path / f"{name}.npz", images)
        save_images(images, tmp_path / name)
        paths[name] = tmp_path / name
    return a, b, paths


def score(samples, reference, classifier, *extra):
    return main(["eval", str(samples), "--reference", str(reference), "--classifier", str(classifier), "--device",
                 "cpu", "--quiet", *map(str, extra)])


def comparable(results: dict) -> dict:
    """A results dict without what names the files (paths, forms) or the moment and durations."""
    settings = {side: {k: v for k, v in facts.items() if k not in ("source", "kind")}
                for side, facts in results["settings"].items() if side != "n"}
    return {"metrics": results["metrics"], "protocols": results["protocols"], "extractors": results["extractors"],
            "settings": settings}


def test_npz_and_folder_of_the_same_images_score_zero_and_alike(sets, tiny_classifier, tmp_path, capsys):
    paths = sets[2]
    assert score(paths["a.npz"], paths["a"], tiny_classifier) == 0
    printed = capsys.readouterr().out
    same = json.loads((tmp_path / "a-vs-a.json").read_text())  # default: SAMPLES-vs-REF.json beside SAMPLES
    assert abs(same["metrics"]["fd_classifier"]) < 1e-4
    assert "FD (classifier features)" in printed and "32 samples vs 32" in printed and "a-vs-a.json" in printed
    assert same["settings"]["samples"]["sha256"] == same["settings"]["reference"]["sha256"]

    assert score(paths["a.npz"], paths["b.npz"], tiny_classifier, "--out", tmp_path / "npz.json") == 0
    assert score(paths["a"], paths["b"], tiny_classifier, "--out", tmp_path / "folder.json") == 0
    npz, folder = (json.loads((tmp_path / name).read_text()) for name in ("npz.json", "folder.json"))
    assert npz["metrics"]["fd_classifier"] > 1e-3
    assert comparable(npz) == comparable(folder)
    assert npz["protocols"]["fd"] == {"n": 32, "samples": npz["settings"]["samples"]["sha256"],
                                      "reference": npz["settings"]["reference"]["sha256"], "reference_split": None,
                                      "reference_n": 32}


def test_a_larger_shift_gives_a_larger_distance(sets, tiny_classifier, tmp_path):
    a, _, paths = sets
    distances = []
    for shift in (0, 30, 90):
        shifted = (a.int() + shift).clamp(0, 255).to(torch.uint8)
        save_npz(tmp_path / f"shift{shift}.npz", shifted)
        assert score(paths["a.npz"], tmp_path / f"shift{shift}.npz", tiny_classifier) == 0
        distances.append(json.loads((tmp_path / f"a-vs-shift{shift}.json").read_text())["metrics"]["fd_classifier"])
    assert abs(distances[0]) < 1e-4 < distances[1] < distances[2]


def test_reference_statistics_are_reused_by_content_and_results_merge(sets, tiny_classifier, tmp_path, isolated_cache):
    _, _, paths = sets
    assert score(paths["a.npz"], paths["b.npz"], tiny_classifier) == 0
    first = json.loads((tmp_path / "a-vs-b.json").read_text())
    shutil.copytree(paths["b"], tmp_path / "b-copy")  # the same images under another name and form
    assert score(paths["a.npz"], tmp_path / "b-copy", tiny_classifier) == 0
    again = json.loads((tmp_path / "a-vs-b-copy.json").read_text())
    [info] = first["reference"].values()
    [info_again] = again["reference"].values()
    assert (info["cached"], info_again["cached"], info_again["path"]) == (False, True, info["path"])
    assert again["metrics"] == first["metrics"]
    # the same images again: results of the same images are kept and joined, not refused
    assert score(paths["a.npz"], paths["b.npz"], tiny_classifier) == 0
    assert json.loads((tmp_path / "a-vs-b.json").read_text())["metrics"] == first["metrics"]


def test_other_images_under_an_existing_name_are_refused_unless_forced(sets, tiny_classifier, tmp_path, capsys):
    _, _, paths = sets
    out = tmp_path / "scores.json"
    assert score(paths["a.npz"], paths["b.npz"], tiny_classifier, "--out", out) == 0
    before = out.read_text()
    capsys.readouterr()
    assert score(paths["a.npz"], paths["a"], tiny_classifier, "--out", out) == 2
    assert "holds other results than these images'; pass --force" in capsys.readouterr().err
    assert out.read_text() == before
    assert score(paths["a.npz"], paths["a"], tiny_classifier, "--out", out, "--force") == 0
    assert abs(json.loads(out.read_text())["metrics"]["fd_classifier"]) < 1e-4


def test_a_dataset_split_against_itself_is_zero_with_results_in_the_current_folder(tiny_classifier, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert score("synthetic:val", "synthetic:val", tiny_classifier, "--n", 20) == 0
    results = json.loads((tmp_path / "synthetic-val-vs-synthetic-val.json").read_text())
    assert abs(results["metrics"]["fd_classifier"]) < 1e-4 and results["reference_split"] == "val"
    assert results["settings"]["samples"] == {"source": "synthetic:val", "kind": "dataset", "n": 20,
                                              "image_shape": [3, 16, 16], "dataset": "synthetic", "split": "val"}
    assert results["protocols"]["fd"]["reference"] == "synthetic:val"


def make_bad_inputs(tmp_path, paths):
    """{case: extra arguments of `eval`}, each of which must be refused."""
    np.savez(tmp_path / "nokey.npz", samples=np.zeros((4, 16, 16, 3), np.uint8))
    np.savez(tmp_path / "float.npz", images=np.zeros((4, 16, 16, 3), np.float32))
    np.savez(tmp_path / "flat.npz", images=np.zeros((4, 16, 16), np.uint8))
    save_npz(tmp_path / "small.npz", torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    (tmp_path / "empty").mkdir()
    a, b = str(paths["a.npz"]), str(paths["b.npz"])
    return {
        "missing samples": (["missing.npz", "--reference", b], "SAMPLES missing.npz: no such file"),
        "missing reference": ([a, "--reference", str(tmp_path / "nope.npz")], "no such file"),
        "no images array": ([str(tmp_path / "nokey.npz"), "--reference", b], "no `images` array"),
        "wrong dtype": ([a, "--reference", str(tmp_path / "float.npz")], "is float32 of shape"),
        "wrong ndim": ([a, "--reference", str(tmp_path / "flat.npz")], "of shape (4, 16, 16);"),
        "empty folder": ([str(tmp_path / "empty"), "--reference", b], "no images"),
        "unknown dataset": ([a, "--reference", "cifar100:train"], "unknown dataset 'cifar100'"),
        "unknown samples dataset": (["cifar100:train", "--reference", b], "SAMPLES cifar100:train: unknown dataset"),
        "bad split": ([a, "--reference", "synthetic:dev"], "unknown split 'dev'"),
        "no test split": ([a, "--reference", "synthetic:test"], "synthetic has no test split"),
        "shape mismatch": ([a, "--reference", str(tmp_path / "small.npz")], "are 3×16×16 images (C×H×W), --reference"),
        "steps": ([a, "--reference", b, "--steps", "5"], "--steps applies to a model"),
        "sampler": ([a, "--reference", b, "--sampler", "ddpm"], "--sampler applies to a model"),
        "no-ema": ([a, "--reference", b, "--no-ema"], "--no-ema applies to a model"),
        "sweep": ([a, "--reference", b, "--sweep", "ddim:2"], "--sweep applies to a model"),
        "variance": ([a, "--reference", b, "--variance", "beta"], "--variance applies to a model"),
        "nll-n": ([a, "--reference", b, "--nll-n", "3"], "--nll-n applies to a model"),
        "seed": ([a, "--reference", b, "--seed", "1"], "--seed applies to a model"),
        "guidance": ([a, "--reference", b, "--guidance", "2"], "--guidance applies to a model"),
        "nll": ([a, "--reference", b, "--metrics", "fd,nll"], "--metrics nll measures the variational bound"),
        "speed": ([a, "--reference", b, "--metrics", "speed"], "--metrics speed measures"),
        "n below 2": ([a, "--reference", b, "--n", "1"], "--n and --ref-n must be at least 2"),
        "out not json": ([a, "--reference", b, "--out", str(tmp_path / "x.txt")], "FILE.json, got"),
        "a npz without --reference": ([a], "holds images, not a model: score them with --reference REF"),
    }


def test_every_bad_input_is_one_error_line_exit_2_and_nothing_written(sets, tiny_classifier, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = make_bad_inputs(tmp_path, sets[2])
    before = sorted(p for p in tmp_path.rglob("*"))
    for case, (args, fragment) in cases.items():
        code = main(["eval", *args, "--classifier", str(tiny_classifier), "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, case
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (case, err)
        assert fragment in err, (case, err)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_fd_without_a_classifier_says_to_pass_one_or_use_fid(sets, tmp_path, capsys, isolated_cache):
    _, _, paths = sets
    assert main(["eval", str(paths["a.npz"]), "--reference", str(paths["b.npz"]), "--metrics", "fd", "--device",
                 "cpu", "--quiet"]) == 2
    assert "pass --classifier FILE" in capsys.readouterr().err and not (tmp_path / "a-vs-b.json").exists()


def test_other_shapes_are_refused_for_fd_and_warned_about_for_inception(tmp_path):
    big, small = torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    samples, reference = (image_source(str(save_npz(tmp_path / f"{n}.npz", x)), "X")
                          for n, x in (("s", big), ("r", small)))
    with pytest.raises(UserError, match="3×16×16 images .*1×8×8: FD's classifier reads one shape"):
        check_shapes(["fd", "fid"], samples, big, reference, small)
    with pytest.warns(DdpmlabWarning, match="Inception resizes both to 299×299"):
        check_shapes(["fid", "kid"], samples, big, reference, small)


def test_positional_is_images_or_a_model(short_tiny_run, tmp_path):
    (tmp_path / "pngs").mkdir()
    assert names_images(str(tmp_path / "x.npz")) and names_images(str(tmp_path / "pngs"))
    assert names_images("cifar10:train") and names_images("cifar100:train")  # the latter: refused by name
    assert not names_images(str(short_tiny_run)) and not names_images(str(short_tiny_run / "checkpoints" / "step_0000004"))
    assert not names_images("pretrained:cpu-demo") and not names_images("hf:google/ddpm-cifar10-32")
    assert not names_images(str(tmp_path / "model.ckpt"))


def test_a_model_is_scored_against_the_reference_split_it_is_given(short_tiny_run, tiny_classifier, tmp_path):
    def evaluate(*extra):
        return main(["eval", str(short_tiny_run), "--classifier", str(tiny_classifier), "--metrics", "fd", "--n", "16",
                     "--steps", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path), *extra])

    assert evaluate() == 0
    held_out = json.loads((tmp_path / "step_0000004-ddim2-n16-seed0.json").read_text())
    assert evaluate("--reference", "synthetic:train") == 0
    train = json.loads((tmp_path / "step_0000004-ddim2-n16-seed0-vs-synthetic-train.json").read_text())
    assert (held_out["reference_split"], train["reference_split"]) == ("val", "train")
    assert train["samples"]["reused"] and train["settings"] == held_out["settings"]  # the same samples
    assert held_out["protocols"]["fd"]["reference_n"] == 51 and "reference_dataset" not in held_out["protocols"]["fd"]
    assert train["protocols"]["fd"]["reference_n"] == 461 and train["protocols"]["fd"]["reference_split"] == "train"
    assert train["protocols"]["fd"]["reference_dataset"] == train["dataset"]
    assert train["metrics"]["fd_classifier"] != held_out["metrics"]["fd_classifier"]


@pytest.mark.parametrize("extra, fragment", [
    (["--reference", "synthetic:test"], "--reference synthetic:test: synthetic has no test split"),
    (["--reference", "NPZ"], "a model's samples are scored against a dataset split NAME:SPLIT"),
    (["--reference", "synthetic:train", "--sweep", "ddim:2"], "drop --reference or --sweep"),
    (["--force"], "--force applies to scoring images"),
])
def test_a_models_bad_reference_is_refused_before_sampling(short_tiny_run, tmp_path, capsys, extra, fragment):
    extra = [str(save_npz(tmp_path / "r.npz", torch.zeros(2, 3, 16, 16, dtype=torch.uint8))) if x == "NPZ" else x
             for x in extra]
    assert main(["eval", str(short_tiny_run), "--n", "4", "--device", "cpu", "--quiet", "--out",
                 str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()
