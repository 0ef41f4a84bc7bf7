"""Nothing ddpmlab reads can run code (issue 13).

In place of every file ddpmlab loads, a payload is planted whose loading by an unsafe reader runs `touch MARKER`:
a pickle (raw, inside a torch zip, inside an .npy or .npz object array) or a YAML `!!python/object/apply` tag. The
command that reads the file refuses it with one `error:` line and exit status 2 (a loader: UserError; a cache: it
treats the file as absent and writes it again), nothing else on disk changes, and the marker never appears. The
first test proves every payload live: an unsafe reader does run it.
"""

import gzip
import hashlib
import io
import os
import pickle
import re
import shlex
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ddpmlab import UserError
from ddpmlab.cli import main
from ddpmlab.config import DataConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "ddpmlab"


class RunsCode:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _saved(save) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def _object_array(marker: Path) -> np.ndarray:
    array = np.empty(1, dtype=object)
    array[0] = RunsCode(marker)
    return array


PAYLOADS = {  # name: (bytes that run `touch marker` when loaded unsafely, that unsafe load)
    "pickle": (lambda m: pickle.dumps(RunsCode(m), protocol=4), pickle.loads),
    "pickle0": (lambda m: pickle.dumps(RunsCode(m), protocol=0), pickle.loads),  # ASCII: passes for text
    "torch": (lambda m: _saved(lambda f: torch.save(RunsCode(m), f)),
              lambda data: torch.load(io.BytesIO(data), weights_only=False)),
    "npy": (lambda m: _saved(lambda f: np.save(f, _object_array(m), allow_pickle=True)),
            lambda data: np.load(io.BytesIO(data), allow_pickle=True)),
    "npz": (lambda m: _saved(lambda f: np.savez(f, images=_object_array(m), settings=_object_array(m),
                                                features=_object_array(m), count=_object_array(m))),
            lambda data: np.load(io.BytesIO(data), allow_pickle=True)["images"]),
    "yaml": (lambda m: f"train:\n  steps: !!python/object/apply:os.system\n    - touch {shlex.quote(str(m))}\n".encode(),
             yaml.unsafe_load),
}


def payload(kind: str, marker: Path) -> bytes:
    return PAYLOADS[kind][0](marker)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a planted payload ran"


def files_of(folder: Path) -> dict:
    """{relative path: SHA-256} of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, argv, *fragments) -> str:
    """Run the CLI in-process; assert one `error:` line containing `fragments` and exit status 2; return it."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, (code, err)
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_every_payload_runs_code_when_loaded_unsafely(tmp_path, kind):
    ran = tmp_path / "ran"
    make, unsafe_load = PAYLOADS[kind]
    unsafe_load(make(ran))
    assert ran.exists()


# -- a run directory: checkpoint files, config.yaml, metrics.csv ------------------------------------------------
def _resume(run, out):
    return ["train", "--resume", run, "train.steps=6", "--quiet"]


def _sample(run, out):
    return ["sample", run, "--n", 2, "--steps", 2, "--out", out / "s.png", "--quiet"]


def _sample_raw(run, out):
    return [*_sample(run, out), "--no-ema"]


def _eval_speed(run, out):
    return ["eval", run, "--metrics", "speed", "--n", 2, "--steps", 2, "--batch-size", 2, "--speed-repeats", 1,
            "--device", "cpu", "--quiet"]


def _compare(run, out):
    suite = out / "suite.yaml"
    suite.write_text(yaml.safe_dump({"n": 2, "runs": [{"name": "planted", "run": str(run)}]}))
    return ["compare", suite, "--runs-dir", out / "runs", "--out", out / "report", "--quiet"]


READERS = {  # a file of a run directory: (payload kinds planted, the commands that read it)
    "model.safetensors": (["pickle", "torch"], [_resume, _sample_raw]),
    "ema.safetensors": (["pickle", "torch"], [_resume, _sample, _eval_speed]),
    "optimizer.pt": (["pickle", "torch"], [_resume]),
    "rng.pt": (["pickle", "torch"], [_resume]),
    "progress.json": (["pickle0", "pickle"], [_resume, _sample, _eval_speed]),
    "config.yaml": (["pickle0", "pickle", "yaml"], [_resume, _compare]),
    "metrics.csv": (["pickle0", "pickle"], [_resume, _eval_speed]),
}
RUN_FILE_CASES = [(name, kind) for name, (kinds, _) in READERS.items() for kind in kinds]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's weights_only reader, refusing the payload
@pytest.mark.parametrize("name,kind", RUN_FILE_CASES)
def test_a_planted_run_file_is_refused_by_every_command_that_reads_it(short_tiny_run, tmp_path, capsys, marker,
                                                                      isolated_cache, name, kind):
    run = tmp_path / "run"
    shutil.copytree(short_tiny_run, run)
    planted = sorted(run.rglob(name))  # in every checkpoint: no older one to fall back on
    assert planted and (len(planted) == 2 if name not in ("config.yaml", "metrics.csv") else len(planted) == 1)
    for path in planted:
        path.write_bytes(payload(kind, marker))
    before = files_of(run)
    for command in READERS[name][1]:
        out = tmp_path / command.__name__
        out.mkdir()
        err = refused(capsys, command(run, out))
        assert name in err or (name.endswith((".safetensors", ".pt", ".json")) and "checkpoint" in err), err
        assert files_of(run) == before, command.__name__
        assert not (out / "s.png").exists() and not (out / "report").exists()


def test_the_unplanted_run_is_read_by_the_same_commands(short_tiny_run, tmp_path, capsys, isolated_cache):
    """The control: with no file planted, the reading commands above succeed (the refusals are the payloads')."""
    run = tmp_path / "run"
    shutil.copytree(short_tiny_run, run)
    for command in (_sample, _sample_raw, _eval_speed, _resume):
        out = tmp_path / command.__name__
        out.mkdir()
        assert main([str(a) for a in command(run, out)]) == 0, capsys.readouterr().err
    assert (tmp_path / "_sample" / "s.png").is_file()


# -- config files, suites and overrides -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pickle0", "pickle", "yaml"])
def test_a_planted_config_or_suite_yaml_is_refused(tmp_path, capsys, marker, kind):
    planted = tmp_path / "planted.yaml"
    planted.write_bytes(payload(kind, marker))
    refused(capsys, ["train", planted, "--run-dir", tmp_path / "r", "--quiet"], "planted.yaml")
    refused(capsys, ["config", planted], "planted.yaml")
    refused(capsys, ["compare", planted, "--runs-dir", tmp_path / "runs", "--out", tmp_path / "report"], "planted.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["planted.yaml"]


def test_a_python_tag_in_an_override_is_text_not_code(tmp_path, capsys, marker):
    tag = f"!!python/object/apply:os.system [touch {marker}]"
    refused(capsys, ["train", "tiny", f"train.steps={tag}", "--run-dir", tmp_path / "r"], "train.steps must be an integer")
    refused(capsys, ["train", "tiny", f"data.name={tag}", "--run-dir", tmp_path / "r"], "data.name")


# -- datasets ---------------------------------------------------------------------------------------------------
def _cifar_folder(root: Path, data: bytes) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(data)


def _cifar_archive(root: Path, data: bytes) -> None:
    root.mkdir(parents=True)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _idx(root: Path, data: bytes, gz: bool = False) -> None:
    root.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


DATASETS = {  # case: (data overrides given ROOT, plant(ROOT, marker), the refusal names)
    "cifar-folder": (lambda r: ["data.name=cifar10", f"data.root={r}", "data.download=false"],
                     lambda r, m: _cifar_folder(r, pickle.dumps({b"data": RunsCode(m)}, protocol=2)),
                     "not a CIFAR-10 batch (refusing to load posix.system)"),
    "cifar-archive": (lambda r: ["data.name=cifar10", f"data.root={r}", "data.download=false"],
                      lambda r, m: _cifar_archive(r, pickle.dumps(RunsCode(m), protocol=2)),
                      "not a CIFAR-10 batch (refusing to load posix.system)"),
    "mnist-idx": (lambda r: ["data.name=mnist", f"data.root={r}", "data.download=false"],
                  lambda r, m: _idx(r, payload("pickle", m)), "not an IDX file"),
    "mnist-idx-gz": (lambda r: ["data.name=mnist", f"data.root={r}", "data.download=false"],
                     lambda r, m: _idx(r, payload("pickle", m), gz=True), "not an IDX file"),
    "sprites-npy": (lambda r: ["data.name=sprites", f"data.path={r / 'sprites.npy'}"],
                    lambda r, m: (r.mkdir(), (r / "sprites.npy").write_bytes(payload("npy", m))),
                    "sprites.npy: cannot read as a .npy array"),
    "sprites-npz": (lambda r: ["data.name=sprites", f"data.path={r / 'sprites.npz'}"],
                    lambda r, m: (r.mkdir(), (r / "sprites.npz").write_bytes(payload("npz", m))),
                    "sprites.npz: expected one array in a .npy file"),
    "sprites-pickle": (lambda r: ["data.name=sprites", f"data.path={r / 'sprites.npy'}"],
                       lambda r, m: (r.mkdir(), (r / "sprites.npy").write_bytes(payload("pickle", m))),
                       "sprites.npy: cannot read as a .npy array"),
    "sprites-labels": (lambda r: ["data.name=sprites", f"data.path={r / 'sprites.npy'}",
                                  f"data.labels_path={r / 'labels.npy'}"],
                       lambda r, m: (r.mkdir(), np.save(r / "sprites.npy", np.zeros((4, 16, 16, 3), np.uint8)),
                                     (r / "labels.npy").write_bytes(payload("npy", m))),
                       "labels.npy: cannot read as a .npy array"),
    "folder-image": (lambda r: ["data.name=folder", f"data.path={r}"],
                     lambda r, m: (r.mkdir(), (r / "a.png").write_bytes(payload("pickle", m))),
                     "a.png: not a readable image"),
}


@pytest.mark.parametrize("case", sorted(DATASETS))
def test_a_planted_dataset_file_is_refused_before_the_run_directory_is_made(tmp_path, capsys, marker, case):
    overrides, plant, fragment = DATASETS[case]
    root = tmp_path / "data"
    plant(root, marker)
    refused(capsys, ["train", "tiny", *overrides(root), "--run-dir", tmp_path / "run", "--quiet"], fragment)
    assert not (tmp_path / "run").exists()


def test_a_folder_image_that_is_a_pickle_is_skipped_on_request(tmp_path, marker):
    from PIL import Image

    from ddpmlab.data import load_dataset
    from ddpmlab.errors import DdpmlabWarning

    (tmp_path / "a.png").write_bytes(payload("pickle", marker))
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "b.png")
    with pytest.warns(DdpmlabWarning, match=r"skipped 1 unreadable image of 2 in .*: a.png"):
        data = load_dataset(DataConfig(name="folder", path=str(tmp_path), val_fraction=0, on_bad_image="skip"))
    assert data.images.shape == (1, 1, 4, 4) and data.images.unique().tolist() == [9]


def test_a_download_reads_no_torch_file_torchvision_left_behind(tmp_path, monkeypatch, marker):
    """MNIST through the download route: torchvision's dataset class would torch.load root/MNIST/processed/*.pt; only
    its downloader is used, and the IDX files it fetches are read by ddpmlab's own parser."""
    import torchvision.datasets.utils as tv_utils

    from ddpmlab.data import load_dataset

    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(payload("torch", marker))
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    contents = {"images": b"\0\0\x08\x03" + np.array([2, 28, 28], ">u4").tobytes() + images.tobytes(),
                "labels": b"\0\0\x08\x01" + np.array([2], ">u4").tobytes() + bytes([3, 7])}
    fetched = []

    def fake_download(url, download_root, filename, md5):  # offline: what the mirror would serve, uncompressed
        fetched.append(filename)
        name = filename.removesuffix(".gz")
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / name).write_bytes(contents["images" if "images" in name else "labels"])

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    data = load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=True, val_fraction=0), "test")
    assert len(fetched) == 4 and data.labels.tolist() == [3, 7]
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


# -- evaluation: classifiers, cached reference statistics, samples and results read back, Inception ------------------
@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_a_planted_classifier_is_refused(short_tiny_run, tiny_data, tmp_path, capsys, marker, isolated_cache, kind):
    from ddpmlab.eval.classifier import default_classifier_path

    given = tmp_path / "given.safetensors"
    given.write_bytes(payload(kind, marker))
    cached = default_classifier_path(tiny_data)  # where eval looks without --classifier
    cached.parent.mkdir(parents=True)
    cached.write_bytes(payload(kind, marker))
    before = files_of(short_tiny_run)
    base = ["eval", short_tiny_run, "--metrics", "fd", "--n", 2, "--steps", 2, "--device", "cpu", "--quiet"]
    refused(capsys, [*base, "--classifier", given], "given.safetensors: not a readable safetensors file")
    refused(capsys, base, f"{cached.name}: not a readable safetensors file")
    assert files_of(short_tiny_run) == before


def test_planted_caches_samples_and_results_are_ignored_and_written_again(short_tiny_run, tiny_classifier, tmp_path,
                                                                          capsys, marker, isolated_cache):
    import json

    run = tmp_path / "run"
    shutil.copytree(short_tiny_run, run)
    argv = ["eval", run, "--metrics", "fd", "--classifier", tiny_classifier, "--n", 4, "--batch-size", 4,
            "--steps", 2, "--device", "cpu", "--quiet", "--name", "e"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    first = json.loads((run / "eval" / "e.json").read_text())["metrics"]["fd_classifier"]
    planted = [*isolated_cache.rglob("stats/*.npz"), run / "eval" / "e.npz"]
    assert len(planted) == 2
    for path in planted:
        path.write_bytes(payload("npz", marker))
    (run / "eval" / "e.json").write_bytes(payload("pickle", marker))
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    results = json.loads((run / "eval" / "e.json").read_text())
    assert results["metrics"]["fd_classifier"] == first  # the same samples and reference, computed again
    assert not results["samples"]["reused"] and not next(iter(results["reference"].values()))["cached"]
    for path in planted:  # written again as plain arrays
        with np.load(path, allow_pickle=False) as data:
            assert all(data[key].dtype != object for key in data.files)


def test_planted_statistics_and_sample_files_raise_user_errors(tmp_path, marker):
    from ddpmlab.eval.metrics import FeatureStats
    from ddpmlab.eval.reference import load_reference
    from ddpmlab.eval.samples import load_samples
    from ddpmlab.report.plots import samples_grid

    for kind in ("npz", "npy", "pickle", "torch"):
        path = tmp_path / f"{kind}.npz"
        path.write_bytes(payload(kind, marker))
        with pytest.raises(UserError, match="cannot read feature statistics"):
            FeatureStats.load(path)
        with pytest.raises(UserError, match="not a samples file"):
            samples_grid(path, tmp_path / "grid.png")
        assert load_reference(path, "x", 2, {}) is None and load_samples(path, {"n": 1}) is None


@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_a_planted_inception_file_is_refused(tmp_path, monkeypatch, marker, kind):
    from ddpmlab.eval.features import load_inception

    path = tmp_path / "default_1.pt"
    path.write_bytes(payload(kind, marker))
    monkeypatch.setenv("DDPMLAB_INCEPTION", str(path))
    with pytest.raises(UserError, match="is not a TorchScript Inception file"):
        load_inception()


# -- the source: only safe loaders ------------------------------------------------------------------------------
UNSAFE = [  # (pattern, what it allows): a call that can run code while loading, unless it is the safe form
    (r"\btorch\.load\((?!.*weights_only=True)", "torch.load without weights_only=True"),
    (r"\bnp\.load\((?!.*allow_pickle=False)", "np.load without allow_pickle=False"),
    (r"\byaml\.(load|unsafe_load|full_load|load_all|unsafe_load_all)\(|yaml\.(Unsafe|Full)?Loader\b",
     "a YAML loader other than safe_load"),
    (r"\bpickle\.loads?\(|\bmarshal\.|\bshelve\.|\bdill\b|\bjoblib\b", "pickle outside the safe unpickler"),
    (r"(?<![\w.])(eval|exec)\(", "eval/exec"),
    (r"\btorch\.jit\.load\(", "TorchScript (a program) outside the Inception loader"),
]
ALLOWED = {("eval/features.py", "TorchScript (a program) outside the Inception loader")}  # README: the one exception


def test_the_source_calls_only_safe_loaders():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for pattern, what in UNSAFE:
                if re.search(pattern, code) and (str(path.relative_to(SRC)), what) not in ALLOWED:
                    found.append(f"{path.relative_to(SRC)}:{number}: {what}: {line.strip()}")
    assert found == []
    cifar = (SRC / "data" / "cifar.py").read_text()  # the one unpickler: its find_class refuses every other global
    assert "class _SafeUnpickler(pickle.Unpickler)" in cifar and "def find_class" in cifar
