"""Checkpoints: weights as safetensors, optimizer and RNG state as tensors-only torch files, progress as JSON.

A checkpoint is a folder RUN_DIR/checkpoints/step_XXXXXXX/ built under a temporary name and renamed into
place, so a crash never leaves a half-written checkpoint where a loader would look. RUN_DIR/checkpoints/best/
(train.keep_best) is a copy of the best-scoring one, with best.json; the rotation deletes step_* folders only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ddpmlab.errors import UserError

MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, RNG_FILE, PROGRESS_FILE = (
    "model.safetensors", "ema.safetensors", "optimizer.pt", "rng.pt", "progress.json")
FORMAT = "ddpmlab-checkpoint-1"
BEST, BEST_FILE = "best", "best.json"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / PROGRESS_FILE).is_file())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, step: int, model_state: dict, ema_state: dict, optimizer_state: dict,
                    rng_state: dict, progress: dict, metadata: dict[str, str], keep: int) -> Path:
    """Write one checkpoint atomically and delete all but the newest `keep`; returns its folder."""
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        meta = {"format": FORMAT, "step": str(step), **metadata}
        save_file(_contiguous(model_state), tmp / MODEL_FILE, metadata=meta)
        save_file(_contiguous(ema_state), tmp / EMA_FILE, metadata=meta)
        torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        torch.save(rng_state, tmp / RNG_FILE)
        (tmp / PROGRESS_FILE).write_text(json.dumps({"format": FORMAT, "step": step, **progress}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{BEST}.", suffix=".tmp"))
    old = final.parent / f".{BEST}.{os.getpid()}.old"
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
        raise UserError(f"{path}: corrupt progress file") from None
    if not isinstance(progress, dict) or progress.get("format") != FORMAT:
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
