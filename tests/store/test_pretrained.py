"""Shipped checkpoints (`pretrained:NAME`): every model in the package samples correctly; the machinery (export, list,
sample, eval, compare) is pinned on a tiny model trained here and exported into a temporary root."""

import fnmatch
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import flatten, load_config
from ddpmlab.errors import UserError
from ddpmlab.methods import sample_images
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import load_trained
from ddpmlab.commands import pretrained as export
from ddpmlab.store import pretrained
from ddpmlab.train import Trainer

SHIPPED = pretrained.pretrained_names(pretrained.package_root())  # what the package ships, not $DDPMLAB_PRETRAINED_DIR
PER_CLASS = 3  # samples of every class for the recognition check
MIN_CLASS_ACCURACY = 0.8


def draw(net, config, labels=None, n=8, steps=10):
    """[-1, 1] float images from any network of load_trained: a few dpm-solver++ steps (the run's guidance for a
    conditional model), or one pass."""
    generator = torch.Generator().manual_seed(0)
    if net.SINGLE_PASS:
        return sample_images(net, n, generator)
    sampling = SamplingSettings("dpm-solver++", min(steps, net.schedule.T),
                                 guidance=config.sample.guidance if labels is not None else None)
    return sample_images(net, n if labels is None else len(labels), generator, sampling, labels)


def check_samples(source) -> None:
    """The shipped-model check: images of the stored shape, finite, in [-1, 1]."""
    net, _, config, _ = load_trained(source, device="cpu")
    labels = torch.arange(net.num_classes) if net.num_classes else None
    images = draw(net, config, labels)
    assert images.shape == (len(images), *net.image_shape) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().max() <= 1


def requested_class_accuracy(images: torch.Tensor, labels: torch.Tensor, data_cfg) -> float:
    """How often the dataset's shipped classifier recognises the requested class in [-1, 1] images."""
    from ddpmlab.eval.classifier import classifier_features

    extractor, _ = classifier_features(data_cfg)
    return float((extractor.predict(images) == labels).float().mean())


# -- every shipped model (none until the lead exports them: zero cases, not a skip) ------------------------------
if SHIPPED:
    @pytest.mark.parametrize("name", SHIPPED)
    def test_every_shipped_model_samples_in_range(name):
        check_samples(f"pretrained:{name}")
        info = pretrained.read_info(pretrained.package_root() / name)
        assert info["training"]["steps"] > 0 and info["scores"], f"{name}: info.json lacks training or scores"
        assert export.folder_bytes(pretrained.package_root() / name) < export.MAX_BYTES

    CONDITIONAL = [name for name in SHIPPED if pretrained.read_info(pretrained.package_root() / name)["num_classes"]]
    if CONDITIONAL:
        @pytest.mark.parametrize("name", CONDITIONAL)
        def test_shipped_conditional_models_draw_the_requested_class(name):
            net, _, config, _ = load_trained(f"pretrained:{name}", device="cpu")
            labels = torch.arange(net.num_classes).repeat_interleave(PER_CLASS)
            accuracy = requested_class_accuracy(draw(net, config, labels), labels, config.data)
            assert accuracy >= MIN_CLASS_ACCURACY, f"{name}: requested class recognised in {accuracy:.0%}"


def test_the_class_check_passes_real_images_and_fails_wrong_ones():
    """The recognition check on real Fashion-MNIST test images of the requested class (what a perfect model draws),
    and of the next class."""
    from ddpmlab.data import load_dataset

    data_cfg = load_config("fashion-mnist").data
    test = load_dataset(data_cfg, "test")
    labels = torch.arange(10).repeat_interleave(PER_CLASS)
    index = {c: (test.labels == c).nonzero().flatten() for c in range(10)}
    real = torch.stack([test.images[index[int(c)][k % PER_CLASS]] for k, c in enumerate(labels)])
    assert requested_class_accuracy(real, labels, data_cfg) >= 0.9
    assert requested_class_accuracy(real, (labels + 1) % 10, data_cfg) <= 0.1


def test_package_data_ships_every_file_of_a_model_folder(exported):
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()  # tomllib is Python 3.11+
    globs = json.loads(re.search(r"\[tool\.setuptools\.package-data\]\s*ddpmlab = (\[.*?\])", pyproject, re.S).group(1))
    for path in (exported["root"] / "tiny").iterdir():
        assert any(fnmatch.fnmatch(f"pretrained/tiny/{path.name}", glob) for glob in globs), path.name


# -- the machinery, on a tiny model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 10-step tiny run exported twice into a temporary root: `tiny` (float16) and `tiny32` (float32)."""
    folder = tmp_path_factory.mktemp("pretrained")
    run, root = folder / "run", folder / "root"
    Trainer(load_config("tiny", ["train.steps=10"]), run, progress=False).train()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.ROOT_ENV, str(root))
        assert main(["pretrained", "export", str(run), "tiny", "--fp16", "--machine", "test machine"]) == 0
        assert main(["pretrained", "export", str(run), "tiny32"]) == 0
    return {"run": run, "root": root}


@pytest.fixture
def root(exported, monkeypatch):
    monkeypatch.setenv(pretrained.ROOT_ENV, str(exported["root"]))
    return exported["root"]


def test_export_writes_the_folder_and_fp16_loads_as_float32(exported, root):
    run = exported["run"]
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["checksums.json", "config.yaml", "info.json",
                                                                 "metrics.csv", "model.safetensors"]
    stored, _ = ckpt.read_weights(root / "tiny" / "model.safetensors")
    ema, _ = ckpt.read_weights(ckpt.list_checkpoints(run)[-1] / ckpt.EMA_FILE)
    assert {v.dtype for v in stored.values()} == {torch.float16}
    net, _, _, step = load_trained("pretrained:tiny", device="cpu")
    assert step == 10 and all(v.dtype == torch.float32 for v in net.state_dict().values())
    for key, value in net.state_dict().items():
        assert torch.equal(value, ema[key].half().float()), key
    info = pretrained.read_info(root / "tiny")
    assert info["training"]["steps"] == 10 and info["training"]["batch_size"] == 16
    assert info["training"]["wall_s"] > 0 and info["training"]["devices"] == ["cpu"]
    assert info["machine"] == "test machine" and info["weights"]["dtype"] == "float16"
    assert info["image_shape"] == [3, 16, 16] and info["parameters"] == sum(p.numel() for p in net.parameters())
    assert (root / "tiny" / "metrics.csv").read_text() == (run / "metrics.csv").read_text()


def test_pretrained_samples_are_the_runs_samples(exported, root, tmp_path):
    """pretrained:NAME (float32) is the run's newest EMA network: the same seed draws the same images."""
    common = ["--sampler", "dpm-solver++", "--steps", "5", "--n", "6", "--quiet"]
    assert main(["sample", "pretrained:tiny32", "--out", str(tmp_path / "a.npz"), *common]) == 0
    assert main(["sample", str(exported["run"]), "--out", str(tmp_path / "b.npz"), *common]) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a["images"].shape == (6, 16, 16, 3) and np.array_equal(a["images"], b["images"])
    check_samples("pretrained:tiny")  # the shipped-model check itself, on the float16 export


def test_unknown_names_and_raw_weights_are_user_errors(root, capsys, tmp_path):
    assert main(["sample", "pretrained:nope", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == "error: unknown pretrained model 'nope'; available: tiny, tiny32\n"
    assert main(["eval", "pretrained:nope"]) == 2
    assert "unknown pretrained model 'nope'" in capsys.readouterr().err
    assert main(["sample", "pretrained:tiny", "--no-ema", "--out", str(tmp_path / "x.png")]) == 2
    assert "ships its EMA weights only" in capsys.readouterr().err


def test_list_shows_training_and_scores(exported, root, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "pretrained:tiny", "--metrics", "speed", "--speed-repeats", "1", "--sampler", "dpm-solver++",
                 "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()
    results = next((tmp_path / "eval" / "pretrained-tiny").glob("*.json"))
    fake = json.loads(results.read_text())  # a score file as `eval --metrics fd` writes it, of these weights
    fake["metrics"]["fd_classifier"] = 1.234
    fake.update(reference_split="val", reference={"x": {"count": 51}}, metrics_requested=["fd"])
    (tmp_path / "scores.json").write_text(json.dumps(fake))
    assert main(["pretrained", "export", str(exported["run"]), "tiny", "--fp16", "--force", "--machine", "test machine",
                 "--scores", str(tmp_path / "scores.json")]) == 0
    capsys.readouterr()
    assert main(["pretrained", "list"]) == 0
    out = capsys.readouterr().out
    assert "pretrained:tiny  ddpm, 3×16×16 images" in out and "pretrained:tiny32" in out
    assert "trained 10 steps in" in out and "FD 1.234 (" in out and "vs 51 val" in out
    score = pretrained.read_info(root / "tiny")["scores"][0]
    assert score["measured_on"] == "shipped weights" and score["command"].startswith("ddpmlab eval pretrained:tiny ")


def test_eval_of_a_pretrained_model_writes_beside_the_user_not_into_the_package(exported, root, tmp_path,
                                                                                 monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in (root / "tiny").iterdir()}
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "pretrained:tiny", "--metrics", "speed", "--speed-repeats", "1", "--sampler", "dpm-solver++",
                 "--steps", "2", "--quiet"]) == 0
    written = [p.name for p in (tmp_path / "eval" / "pretrained-tiny").iterdir()]
    assert len(written) == 1 and written[0].endswith(".json")
    results = json.loads((tmp_path / "eval" / "pretrained-tiny" / written[0]).read_text())
    assert results["settings"]["checkpoint_step"] == 10
    assert results["metrics"]["train_wall_s"] == pytest.approx(
        pretrained.read_info(root / "tiny")["training"]["wall_s"], rel=0.2)  # from the shipped metrics.csv
    assert {p.name: p.stat().st_mtime_ns for p in (root / "tiny").iterdir()} == before


def test_export_refusals(exported, root, monkeypatch, tmp_path):
    run = exported["run"]
    with pytest.raises(UserError, match="exists; pass --force"):
        export.export_pretrained(run, "tiny")
    with pytest.raises(UserError, match="lowercase letters"):
        export.export_pretrained(run, "../escape")
    monkeypatch.setattr(export, "MAX_BYTES", 100_000)
    with pytest.raises(UserError, match=r"would take 0\.7 MB, over the 0\.1 MB limit; try --fp16"):
        export.export_pretrained(run, "big")
    assert not (root / "big").exists() and not [p for p in root.iterdir() if p.name.startswith(".")]
    other = {"settings": {"checkpoint_step": 3, "weights": "ema", "weights_digest": "00000000"}, "metrics": {}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="measured on other weights"):
        export.export_pretrained(run, "new", scores=[tmp_path / "other.json"])


def test_compare_evaluates_a_pretrained_entry_into_the_report_folder(exported, root, tmp_path, monkeypatch):
    from ddpmlab.commands.compare import compare_suite
    from ddpmlab.eval.classifier import train_classifier_to_file

    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path / "cache"))
    classifier = tmp_path / "synthetic.safetensors"  # FD features for the tiny preset's shapes (10 steps: any map)
    train_classifier_to_file(load_config("tiny").data, classifier, steps=10, batch_size=32, progress=False)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"n: 8\nmetrics: fd\nclassifier: {classifier}\n"
                     f"runs:\n  - {{name: shipped, run: 'pretrained:tiny32'}}\n")
    report = compare_suite(str(suite), tmp_path / "runs", tmp_path / "report", device="cpu", progress=False,
                           say=lambda line: None)
    row = report["rows"][0]
    assert row["source"] == "pretrained:tiny32" and row["step"] == 10
    assert Path(row["eval_json"]).parent == tmp_path / "report" / "pretrained" / "shipped"
    assert row["training"]["train_steps"] == 10 and row["metrics"]["fd_classifier"] > 0  # from the shipped metrics.csv
    assert not (root / "tiny32" / "eval").exists() and not (tmp_path / "runs").exists()


def test_a_damaged_shipped_file_is_named_before_use(exported, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(exported["root"] / "tiny32", root / "tiny32")
    monkeypatch.setenv(pretrained.ROOT_ENV, str(root))
    weights = root / "tiny32" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.safetensors: damaged, its SHA-256 differs .*reinstall ddpmlab"):
        load_trained("pretrained:tiny32", device="cpu")


@pytest.mark.parametrize("damage", ["{ not json", '{"format": "ddpmlab-pretrained-1", "training": [], "scores": 3}'])
def test_list_names_a_damaged_model_and_lists_the_rest(damage, tmp_path, monkeypatch, capsys):
    import shutil

    for name in ("cpu-demo", "cpu-demo-vae"):  # info.json is all that list reads
        (tmp_path / name).mkdir()
        shutil.copy(pretrained.package_root() / name / "info.json", tmp_path / name / "info.json")
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    (tmp_path / "cpu-demo" / "info.json").write_text(damage)
    monkeypatch.setenv(pretrained.ROOT_ENV, str(tmp_path))
    assert main(["pretrained", "list"]) == 0
    out, err = capsys.readouterr()
    assert "pretrained:cpu-demo-vae  vae" in out and "pretrained:cpu-demo " not in out
    assert [line.split(": ")[:2] for line in err.splitlines()] == [["warning", "pretrained:cpu-demo left out"]]
    assert str(tmp_path / "cpu-demo" / "info.json") in err


def test_list_gives_the_nll_its_own_protocol():
    table = export.pretrained_table(pretrained.package_root())
    line = next(line for line in table.splitlines() if "NLL" in line)
    sampled, nll = line.split("; NLL")
    assert "(2000 samples vs 10000 test, sde-dpm-solver++ 20 NFE, seed 0)" in sampled
    assert nll == " bits/dim 3.936 (200 test images, 100 timesteps)"
    info = pretrained.read_info(pretrained.package_root() / "cpu-demo")
    assert "--nll-n 200 --nll-timesteps 100" in info["scores"][0]["command"]


def test_an_nll_only_score_file_ships_without_a_sampling_protocol(tmp_path):
    results = {"settings": {"checkpoint_step": 5, "weights": "ema", "weights_digest": "abcd0123", "nll_n": 200,
                            "nll_timesteps": 100, "batch_size": 64, "seed": 0, "device_type": "cpu"},
               "metrics": {"nll_bits_per_dim": 3.9, "nll_bits_per_dim_se": 0.1}, "metrics_requested": ["nll"],
               "protocols": {"nll": {"n": 200, "split": "test", "timesteps": 100, "seed": 0}}}
    (tmp_path / "nll.json").write_text(json.dumps(results))
    entry = export.score_entry(tmp_path / "nll.json", 5, {"shipped weights": "abcd0123"}, "m")
    assert entry["protocol"] is None and entry["protocols"]["nll"]["timesteps"] == 100
    assert entry["command"] == ("ddpmlab eval pretrained:m --metrics nll --nll-n 200 --nll-timesteps 100 --seed 0 "
                                "--batch-size 64")
    assert export.score_summary(entry) == "NLL bits/dim 3.9 (200 test images, 100 timesteps)"


def test_a_score_of_a_conditional_model_replays_with_its_guidance():
    settings = {"sampler": "dpm-solver++", "steps": 20, "spacing": "logSNR", "nfe": 20, "guidance": 0.5}
    # every step guided, whatever the model's own sample.guidance_interval
    assert export.sampling_flags(settings) == (" --sampler dpm-solver++ --steps 20 --spacing logSNR --guidance 0.5 "
                                               "--guidance-interval none")
    assert export.sampling_flags({**settings, "guidance_interval": [0.3, 10.0]}).endswith(
        "--guidance 0.5 --guidance-interval 0.3,10.0")
    assert export.sampling_flags({**settings, "guidance": None}).endswith("--spacing logSNR")
    protocol = {**settings, "n": 2000, "reference_n": 10000, "reference_split": "test", "seed": 0}
    assert export.sampling_text({**protocol, "guidance_interval": [0.3, 10.0]}) == (
        "2000 samples vs 10000 test, dpm-solver++ 20 NFE (logSNR spacing), guidance 0.5 at σ in (0.3, 10], seed 0")
    assert export.sampling_text(protocol).endswith("guidance 0.5, seed 0")


def test_list_names_a_spacing_other_than_the_samplers_own_and_the_guidance():
    table = export.pretrained_table(pretrained.package_root())
    latent = table.split("pretrained:cpu-demo-latent ")[1].split("pretrained:")[0]
    # autoguided DPM-Solver++ 10: 20 network evaluations; time-quadratic is the sampler's own spacing
    assert ("FID 26.44, FD 1.639 (2000 samples vs 10000 test, dpm-solver++ 10 steps, 20 NFE, guidance 1.5, "
            "seed 0)") in latent
    assert ("FID 27.44, FD 3.272 (2000 samples vs 10000 test, dpm-solver++ 10 steps, 20 NFE (logSNR spacing), "
            "guidance 1.5, seed 0)") in latent
    assert ("FID 21.35, FD 1.429 (10000 samples vs 10000 test, dpm-solver++ 10 steps, 20 NFE, guidance 1.5, "
            "seed 0)") in latent


WRITE_ONLY = {"train.sample_every", "train.keep_checkpoints"}  # how often a run writes grids and what it keeps


@pytest.mark.parametrize("name", ["cpu-demo-latent", "fashion-mnist-latent"])
def test_the_latent_presets_are_their_shipped_models_recipes(name):
    """`ddpmlab train NAME` trains what `pretrained:NAME` shipped: the configs differ at most in what a run writes."""
    shipped = flatten(load_config(str(pretrained.package_root() / name / "config.yaml")))
    preset = flatten(load_config(name))
    assert {key for key in preset if preset[key] != shipped[key]} <= WRITE_ONLY
