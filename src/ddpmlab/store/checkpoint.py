"""Checkpoints: weights as safetensors, optimizer and RNG state as tensors-only torch files, progress as JSON, and
the SHA-256 and size of each of them in checksums.json.

A checkpoint is a folder RUN_DIR/checkpoints/step_XXXXXXX/ built under a temporary name (.step_XXXXXXX.*.tmp), its
files synced, and renamed into place, so a crash never leaves a half-written checkpoint where a loader would look;
a file damaged later (truncated, bits flipped) is caught by `verify_checkpoint` before it is used.
RUN_DIR/checkpoints/best/ (train.keep_best) is a copy of the best-scoring one, with best.json; the rotation deletes
step_* folders only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from ddpmlab.errors import UserError
from ddpmlab.paths import storage_error, temporary_sibling
from ddpmlab.store.manifest import record_written

MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, RNG_FILE, PROGRESS_FILE = (
    "model.safetensors", "ema.safetensors", "optimizer.pt", "rng.pt", "progress.json")
CHECKSUMS_FILE = "checksums.json"  # absent from checkpoints written before checksums; those load unchecked
FORMAT = "ddpmlab-checkpoint-1"
CHECKSUMS_FORMAT = "ddpmlab-checksums-1"
CHECKPOINT_NAME = re.compile(r"step_\d{7}")
DAMAGED_SUFFIX = ".damaged"  # a damaged checkpoint that --resume moved aside: step_XXXXXXX.damaged
BEST, BEST_FILE = "best", "best.json"  # train.keep_best's copy of the best-scoring checkpoint, and its record


class DamagedCheckpoint(UserError):
    """A checkpoint file that is missing, truncated, altered or unreadable; `Trainer.resume` falls back past it.
    `reason` names the file and what is wrong with it; the message adds the fix."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}; use an earlier checkpoint folder (`ddpmlab train --resume` falls back to one by "
                         f"itself)")
        self.reason = reason


def checkpoint_name(step: int) -> str:
    """The name of step `step`'s checkpoint folder, e.g. "step_0000040" (results of its weights start with it)."""
    return f"step_{step:07d}"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / checkpoint_name(step)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir() and (p / PROGRESS_FILE).is_file())


def save_checkpoint(run_dir: Path, step: int, model_state: dict, ema_state: dict, optimizer_state: dict,
                    rng_state: dict, progress: dict, metadata: dict[str, str], keep: int) -> Path:
    """Write one checkpoint atomically, with the checksums of its files, and delete all but the newest `keep`;
    returns its folder. A write refused for lack of space or permission is a UserError that names the checkpoint
    and the fix; it leaves the earlier checkpoints as they were and no temporary folder."""
    final = checkpoint_dir(run_dir, step)
    meta = {"format": FORMAT, "step": str(step), **metadata}
    files = {MODEL_FILE: lambda: safetensors_bytes(_contiguous(model_state), metadata=meta),
             EMA_FILE: lambda: safetensors_bytes(_contiguous(ema_state), metadata=meta),
             OPTIMIZER_FILE: lambda: _torch_bytes(optimizer_state), RNG_FILE: lambda: _torch_bytes(rng_state),
             PROGRESS_FILE: lambda: json.dumps({"format": FORMAT, "step": step, **progress}, indent=1).encode()}
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        record_written(run_dir, final)
        tmp = temporary_sibling(final)
        tmp.mkdir()
        try:
            checksums = {name: _write_synced(tmp / name, data()) for name, data in files.items()}
            _write_synced(tmp / CHECKSUMS_FILE, json.dumps({"format": CHECKSUMS_FORMAT, "files": checksums},
                                                           indent=1).encode())
            _sync_folder(tmp)
            if final.exists():
                _discard(final)
            os.replace(tmp, final)
            _sync_folder(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        prune_checkpoints(run_dir, keep)
    except OSError as exc:
        error = storage_error(exc, f"checkpoint {final}", _resume_fix(run_dir), name_file=False)  # not its temporary
        if error is None:
            raise
        raise error from None
    return final


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` (>= 1, as validated) complete checkpoints; returns those deleted. Run after
    each write and again on resume, where a session killed between its write and this left one too many."""
    old = list_checkpoints(run_dir)[:-keep]
    for folder in old:
        _discard(folder)
    return old


def _resume_fix(run_dir: Path) -> str:
    """What to do after a checkpoint could not be written: which checkpoint is intact, and how to continue."""
    kept = list_checkpoints(run_dir)
    intact = f"its newest checkpoint {kept[-1].name} is intact" if kept else "it has no checkpoint yet"
    return f"the run stopped and {intact}; free space or make {run_dir} writable, then {how_to_continue(run_dir)}"


def how_to_continue(run_dir: Path) -> str:
    """The command that continues a run stopped by a fault: `--resume` from its newest checkpoint, or, before its
    first checkpoint, a new run from its own config.yaml in the same folder."""
    if list_checkpoints(run_dir):
        return f"`ddpmlab train --resume {run_dir}`"
    return (f"start it again (no checkpoint to resume from): `ddpmlab train {Path(run_dir) / 'config.yaml'} "
            f"--run-dir {run_dir} --force`")


def _torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _write_synced(path: Path, data: bytes) -> dict:
    """Write `data` to a new file and sync it to disk; returns its {"sha256", "bytes"}."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _sync_folder(folder: Path) -> None:
    """Make a folder's entries (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder: first renamed to a temporary name, so that an interrupted deletion never leaves a
    partial checkpoint under a checkpoint's name (`remove_interrupted_writes` finishes it)."""
    aside = temporary_sibling(folder)
    os.replace(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


def file_checksum(path: Path) -> dict:
    """{"sha256", "bytes"} of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "bytes": size}


def verify_checkpoint(folder: Path, names: list[str] | None = None) -> None:
    """Check the files `names` of a checkpoint folder (default: all; a name its checksums.json does not list is not
    checked) against the SHA-256 and size recorded when they were written. DamagedCheckpoint naming the first file
    that is missing, truncated or altered; a checkpoint written before checksums (no checksums.json) passes."""
    folder = Path(folder)
    manifest_path = folder / CHECKSUMS_FILE
    if not manifest_path.exists():
        return
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded = manifest.get("files") if manifest.get("format") == CHECKSUMS_FORMAT else None
        readable = isinstance(recorded, dict) and all(isinstance(entry, dict) and set(entry) == {"sha256", "bytes"}
                                                      for entry in recorded.values())
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a JSON object
        readable = False
    if not readable:
        raise DamagedCheckpoint(f"{manifest_path}: damaged checksum file")
    for name in recorded if names is None else [name for name in names if name in recorded]:
        path, expected = folder / name, recorded[name]
        try:
            found = file_checksum(path)
        except FileNotFoundError:
            raise DamagedCheckpoint(f"{path}: missing from the checkpoint") from None
        if found["bytes"] != expected["bytes"]:
            what = "truncated" if found["bytes"] < expected["bytes"] else "grown"
            raise DamagedCheckpoint(f"{path}: damaged ({what}), {found['bytes']:,} bytes where {expected['bytes']:,} "
                                    f"were written")
        if found["sha256"] != expected["sha256"]:
            raise DamagedCheckpoint(f"{path}: damaged, its SHA-256 differs from the one recorded when it was written "
                                    f"(altered or corrupted on disk)")


def newest_intact(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that passes `verify_checkpoint` and has a readable progress file, or None;
    [(newer damaged checkpoint, why)])."""
    damaged = []
    for folder in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(folder)
            read_progress(folder)
            return folder, damaged
        except DamagedCheckpoint as exc:
            damaged.append((folder, exc.reason))
    return None, damaged


def move_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint to step_XXXXXXX.damaged (replacing an earlier one of that name), out of the way of
    loading and of pruning; returns the new path."""
    target = folder.with_name(folder.name + DAMAGED_SUFFIX)
    record_written(folder.parent.parent, target)
    if target.exists():
        shutil.rmtree(target)
    os.replace(folder, target)
    return target


def best_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / BEST


def read_best(run_dir: Path) -> dict | None:
    """The record (step, metric, score, protocol, ...) of RUN_DIR/checkpoints/best/, or None when there is none."""
    try:
        record = json.loads((best_dir(run_dir) / BEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same bytes, no extra space; survives the rotation deleting `source`
    except OSError:
        shutil.copy2(source, target)


def keep_as_best(run_dir: Path, folder: Path, record: dict) -> Path:
    """Make RUN_DIR/checkpoints/best/ a copy of checkpoint `folder` (hard links where possible) with `record`
    in best.json; built under a temporary name, then swapped in. Returns the best folder."""
    final = best_dir(run_dir)
    record_written(run_dir, final)
    tmp = temporary_sibling(final)
    tmp.mkdir()
    old = temporary_sibling(final)
    try:
        for source in Path(folder).iterdir():
            _link_or_copy(source, tmp / source.name)
        (tmp / BEST_FILE).write_text(json.dumps(record, indent=1))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """8 hex digits of SHA-256 over a state dict's names and bytes (sorted by name): which weights these are."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:8]


def _contiguous(state: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def read_metadata(path: Path, expected_format: str = FORMAT, kind: str = "ddpmlab checkpoint") -> dict[str, str]:
    """The metadata of a safetensors file whose metadata format is `expected_format`, without reading its tensors;
    UserError if missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{kind} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    if metadata.get("format") != expected_format:
        raise UserError(f"{path}: not a {kind} (no '{expected_format}' metadata)")
    return metadata


def read_weights(path: Path, expected_format: str = FORMAT, kind: str = "ddpmlab checkpoint") -> tuple[dict, dict[str, str]]:
    """(state dict, metadata) of a safetensors file whose metadata format is `expected_format`;
    UserError if missing, corrupt or foreign."""
    metadata = read_metadata(path, expected_format, kind)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    return state, metadata


def state_mismatch(expected: dict, found: dict, limit: int = 3) -> str:
    """'' when `found` has exactly `expected`'s names and shapes; else which names are missing or extra and
    which shapes differ (the first `limit` of each), e.g. "conv_in.weight: checkpoint 16×3×3×3, model 32×3×3×3"."""
    def shape(tensor) -> str:
        return "×".join(map(str, tensor.shape)) or "scalar"

    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    differ = [f"{k}: checkpoint {shape(found[k])}, model {shape(expected[k])}" for k in expected
              if k in found and found[k].shape != expected[k].shape]
    parts = []
    for label, items in (("shapes differ", differ), ("missing from the checkpoint", missing), ("not in the model", extra)):
        if items:
            parts.append(f"{label} ({len(items)}): " + "; ".join(items[:limit]) + (" ..." if len(items) > limit else ""))
    return " | ".join(parts)


def read_progress(folder: Path) -> dict:
    """The progress JSON of a checkpoint folder; UserError if missing or corrupt."""
    path = Path(folder) / PROGRESS_FILE
    try:
        progress = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{folder}: not a ddpmlab checkpoint (no {PROGRESS_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DamagedCheckpoint(f"{path}: corrupt progress file") from None
    if not isinstance(progress, dict) or progress.get("format") != FORMAT or not isinstance(progress.get("step"), int):
        raise UserError(f"{path}: not a ddpmlab checkpoint")
    return progress


def read_tensors(path: Path) -> dict:
    """A tensors-only torch file (optimizer or RNG state), loaded with weights_only=True."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint file not found: {path}") from None
    except Exception as exc:  # corrupt zip, pickled code objects: refuse, never execute
        raise UserError(f"{path}: corrupt or unsafe checkpoint file ({exc.__class__.__name__})") from None
