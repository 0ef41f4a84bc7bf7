"""A run directory's own files: which entries ddpmlab wrote (its manifest), so that `--force` removes those and nothing
else."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

from ddpmlab.errors import DdpmlabNote, UserError
from ddpmlab.paths import check_writable_folder
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import check_weights_path, is_lone_weights
from ddpmlab.store.lock import LOCK_FILE
from ddpmlab.store.manifest import MANIFEST_FILE, is_recorded, recorded, start_manifest
from ddpmlab.store.pretrained import is_pretrained_folder, resolve_source

# the top-level files every run writes: ones ddpmlab did not write stop `--force`, which would replace them
RUN_FILES = ("config.yaml", "metrics.csv", "loss.png", "run.log")
# the temporary names of writes a killed process left unfinished: .NAME.*.tmp (files and checkpoint folders)
UNFINISHED = {".": re.compile(r"\.(" + "|".join(map(re.escape, RUN_FILES)) + r")\.[0-9a-f]{8}\.tmp"),
              "checkpoints": re.compile(r"\.(step_\d{7}|best)\..*\.tmp"),
              "samples": re.compile(r"\.step_\d{7}\.png\..*\.tmp")}


def has_content(run_dir: Path) -> bool:
    """True when `run_dir` exists and is a file or a folder holding more than a run lock."""
    run_dir = Path(run_dir)
    return run_dir.exists() and (not run_dir.is_dir() or any(p.name != LOCK_FILE for p in run_dir.iterdir()))


def unfinished_writes(run_dir: Path) -> list[Path]:
    """The temporary files and folders that writes interrupted by a crash or kill left in `run_dir`."""
    found = []
    for folder, pattern in UNFINISHED.items():
        if (Path(run_dir) / folder).is_dir():
            found += sorted(p for p in (Path(run_dir) / folder).iterdir() if pattern.fullmatch(p.name))
    return found


def remove_unfinished_writes(run_dir: Path) -> list[Path]:
    """Delete `unfinished_writes(run_dir)` (call it only as the run's owner); returns what was deleted."""
    found = unfinished_writes(run_dir)
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return found


def check_new_run_dir(run_dir: Path, force: bool) -> None:
    """UserError unless a new run may start in `run_dir`: a writable place, empty or absent, or with `force` a folder
    holding a ddpmlab run (its manifest)."""
    check_writable_folder(Path(run_dir), "--run-dir")
    if not has_content(run_dir):
        return
    if Path(run_dir).is_dir() and recorded(run_dir) is None:
        raise UserError(f"{run_dir} is not empty and not a ddpmlab run (no {MANIFEST_FILE}, the list of the files "
                        f"ddpmlab wrote, all that --force removes); refusing to touch it: choose another --run-dir")
    if not force:
        raise UserError(f"run directory {run_dir} already exists; use --force to overwrite or --resume to continue")


def owned_entries(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(entries ddpmlab wrote, entries it did not) in `run_dir` and in the folders holding what it wrote, judged by
    the run's manifest; the run lock and the manifest itself are neither."""
    listed = recorded(run_dir) or set()
    owned, foreign = [], []

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            relative = prefix + entry.name
            if relative in (LOCK_FILE, MANIFEST_FILE):  # the lock is its owner's, never removed by another process
                continue
            if is_recorded(relative, listed):
                owned.append(entry)
            elif entry.is_dir() and not entry.is_symlink() and any(p.startswith(relative + "/") for p in listed):
                walk(entry, relative + "/")
            else:
                foreign.append(entry)

    walk(Path(run_dir), "")
    return owned, foreign


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Make `run_dir` ready for a new run and begin its manifest. With `force`, remove what the earlier run's
    manifest lists and keep every other file (listed on stderr); a non-empty folder holding no run is refused, and
    so is one holding a file a new run would replace that ddpmlab did not write."""
    run_dir = Path(run_dir)
    if has_content(run_dir):
        if not run_dir.is_dir():
            raise UserError(f"--run-dir {run_dir} is a file, not a folder")
        check_new_run_dir(run_dir, force)
        owned, foreign = owned_entries(run_dir)
        in_the_way = [p.name for p in foreign if p.parent == run_dir and p.name in RUN_FILES]
        if in_the_way:
            raise UserError(f"{run_dir}: {', '.join(in_the_way)} not written by ddpmlab (not in {MANIFEST_FILE}), and a "
                            f"new run would replace it; move it away or choose another --run-dir")
        for entry in owned:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for folder in sorted({p.parent for p in owned} - {run_dir}, key=lambda p: -len(p.parts)):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if foreign:
            names = ", ".join(str(p.relative_to(run_dir)) for p in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            warnings.warn(f"--force removed the earlier run in {run_dir} and kept {len(foreign)} file(s) ddpmlab did "
                          f"not write: {names}", DdpmlabNote, stacklevel=2)
    run_dir.mkdir(parents=True, exist_ok=True)
    start_manifest(run_dir)


def run_of(path: Path) -> Path:
    """The run directory of a run directory or of one of its checkpoint folders (RUN/checkpoints/step_X); a
    pretrained model's folder for `pretrained:NAME` or that folder; for a weights file, its checkpoint folder's run,
    or the file itself when it lies outside any checkpoint folder (a lone weights file)."""
    path = resolve_source(path)
    if path.is_file():
        check_weights_path(path)
        return path if is_lone_weights(path) else run_of(path.parent)
    if not path.is_dir():
        raise UserError(f"no such run directory or checkpoint folder: {path}")
    if (path / ckpt.PROGRESS_FILE).is_file():
        if path.parent.name != "checkpoints" or not (path.parent.parent / "config.yaml").is_file():
            raise UserError(f"{path}: a checkpoint outside a run directory; give its run directory, or --out for results")
        return path.parent.parent
    return path


def eval_folder(run_dir: Path) -> Path:
    """Where evaluation results go without --out: RUN_DIR/eval; for a pretrained model, whose folder is part of the
    installed package and never written to, eval/pretrained-NAME in the current directory, and likewise
    eval/hf-ORG--NAME for a model in the Hugging Face cache (hf:ORG/NAME); for a lone weights file FILE.safetensors,
    FILE's folder/eval/FILE."""
    if run_dir.is_file():
        return run_dir.parent / "eval" / run_dir.stem
    if run_dir.parent.name == "snapshots" and run_dir.parent.parent.name.startswith("models--"):  # hf:ORG/NAME's cache
        return Path("eval") / f"hf-{run_dir.parent.parent.name.removeprefix('models--')}"
    return Path("eval") / f"pretrained-{run_dir.name}" if is_pretrained_folder(run_dir) else run_dir / "eval"
