import errno
import hashlib
import json
import os

import pytest
import torch

from ddpmlab import UserError
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.run_dir import remove_unfinished_writes


def _save(run, step, keep=2):
    state = {"w": torch.full((2,), float(step))}
    return ckpt.save_checkpoint(run, step, state, state, {"state": {}, "param_groups": []},
                                {"generator": torch.Generator().get_state()}, {"wall_s": 1.0}, {"config": "{}"}, keep)


def test_keeps_the_newest_and_leaves_no_temporaries(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000020", "step_0000030"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    state, meta = ckpt.read_weights(ckpt.checkpoint_dir(tmp_path, 30) / ckpt.MODEL_FILE)
    assert state["w"].tolist() == [30.0, 30.0] and meta["step"] == "30"


def test_a_failed_write_leaves_earlier_checkpoints_intact(tmp_path, monkeypatch):
    _save(tmp_path, 10)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(OSError):
        _save(tmp_path, 20)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000010"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000010"]


def test_corrupt_and_foreign_files_are_user_errors(tmp_path):
    folder = _save(tmp_path, 10)
    (folder / ckpt.MODEL_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="safetensors"):
        ckpt.read_weights(folder / ckpt.MODEL_FILE)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "foreign.safetensors")
    with pytest.raises(UserError, match="not a ddpmlab checkpoint"):
        ckpt.read_weights(tmp_path / "foreign.safetensors")
    (folder / ckpt.RNG_FILE).write_bytes(b"not a zip")
    with pytest.raises(UserError, match="corrupt"):
        ckpt.read_tensors(folder / ckpt.RNG_FILE)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="unsafe"):
        ckpt.read_tensors(tmp_path / "evil.pt")


# -- integrity: every file's SHA-256 and size in checksums.json, checked before use -------------------------------
def _flip_bit(path, position=-7):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {  # kind -> (how, the words the error must contain)
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "damaged (truncated)"),
    "bit flipped": (_flip_bit, "its SHA-256 differs"),
    "zeroed": (lambda p: p.write_bytes(bytes(p.stat().st_size)), "its SHA-256 differs"),
    "grown": (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "damaged (grown)"),
    "missing": (lambda p: p.unlink(), "missing from the checkpoint"),
}
FILES = (ckpt.MODEL_FILE, ckpt.EMA_FILE, ckpt.OPTIMIZER_FILE, ckpt.RNG_FILE, ckpt.PROGRESS_FILE)


def test_checksums_record_every_file(tmp_path):
    folder = _save(tmp_path, 10)
    manifest = json.loads((folder / ckpt.CHECKSUMS_FILE).read_text())
    assert set(manifest["files"]) == set(FILES)
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    ckpt.verify_checkpoint(folder)  # intact: no error


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("name", FILES)
def test_every_kind_of_damage_to_every_file_is_named(tmp_path, name, kind):
    folder = _save(tmp_path, 10)
    damage, words = DAMAGE[kind]
    damage(folder / name)
    with pytest.raises(ckpt.DamagedCheckpoint) as caught:
        ckpt.verify_checkpoint(folder)
    assert str(caught.value).startswith(f"{folder / name}: ") and words in str(caught.value)
    assert isinstance(caught.value, UserError) and "earlier checkpoint" in str(caught.value)
    others = [other for other in FILES if other != name]
    ckpt.verify_checkpoint(folder, others)  # only the damaged file is blamed


@pytest.mark.parametrize("kind", ["bit flipped", "truncated", "missing"])
def test_a_damaged_checksum_file_is_named(tmp_path, kind):
    folder = _save(tmp_path, 10)
    DAMAGE[kind][0](folder / ckpt.CHECKSUMS_FILE)
    if kind == "missing":  # a checkpoint without checksums.json is one written before them: loads unchecked
        ckpt.verify_checkpoint(folder)
        return
    with pytest.raises(ckpt.DamagedCheckpoint, match="checksums.json: damaged checksum file"):
        ckpt.verify_checkpoint(folder)


def test_newest_intact_skips_damaged_checkpoints(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step, keep=3)
    _flip_bit(ckpt.checkpoint_dir(tmp_path, 30) / ckpt.OPTIMIZER_FILE)
    progress = ckpt.checkpoint_dir(tmp_path, 20) / ckpt.PROGRESS_FILE
    written = progress.stat().st_size
    progress.write_text("{")
    newest, damaged = ckpt.newest_intact(tmp_path)
    assert newest.name == "step_0000010"
    assert [(folder.name, reason.split(": ", 1)[1]) for folder, reason in damaged] == [
        ("step_0000030", "damaged, its SHA-256 differs from the one recorded when it was written (altered or "
                         "corrupted on disk)"),
        ("step_0000020", f"damaged (truncated), 1 bytes where {written} were written")]


# -- full disk, unfinished writes -----------------------------------------------------------------------------------
def test_a_full_disk_is_a_user_error_that_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 10)
    real_write = ckpt._write_synced

    def fills_the_disk(path, data):
        if path.name == ckpt.OPTIMIZER_FILE:  # the model and EMA are written, the optimizer's state half
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", fills_the_disk)
    with pytest.raises(UserError) as caught:
        _save(tmp_path, 20)
    message = str(caught.value)
    assert message.startswith(f"cannot write checkpoint {ckpt.checkpoint_dir(tmp_path, 20)}: the disk is full")
    assert "step_0000010 is intact" in message and f"ddpmlab train --resume {tmp_path}" in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000010"]  # no temporary folder
    ckpt.verify_checkpoint(ckpt.checkpoint_dir(tmp_path, 10))
    assert ckpt.read_weights(ckpt.checkpoint_dir(tmp_path, 10) / ckpt.MODEL_FILE)[0]["w"].tolist() == [10.0, 10.0]


def test_deleting_an_old_checkpoint_renames_it_first(tmp_path, monkeypatch):
    """Pruning is a rename to a temporary name, then the deletion: a kill in between leaves no partial checkpoint
    under a checkpoint's name, only a temporary folder that resume removes."""
    for step in (10, 20):
        _save(tmp_path, step)
    monkeypatch.setattr(ckpt.shutil, "rmtree", lambda *args, **kwargs: None)  # the deletion never happens
    _save(tmp_path, 30)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[-2:] == ["step_0000020", "step_0000030"] and len(names) == 3
    assert names[0].startswith(".step_0000010.") and names[0].endswith(".tmp")
    monkeypatch.undo()
    assert [p.name for p in remove_unfinished_writes(tmp_path)] == [names[0]]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000020", "step_0000030"]


def test_the_best_checkpoint_survives_the_rotation_and_is_replaced_whole(tmp_path):
    from ddpmlab.store.manifest import start_manifest
    from ddpmlab.store.run_dir import owned_entries

    start_manifest(tmp_path)  # a run's: what the checkpoints record in it is the run's own
    ckpt.keep_as_best(tmp_path, _save(tmp_path, 10, keep=1), {"step": 10, "score": 2.5})
    for step in (20, 30):
        _save(tmp_path, step, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000030"]  # step 10 rotated away
    best = tmp_path / "checkpoints" / "best"
    state, _ = ckpt.read_weights(best / ckpt.EMA_FILE)
    assert state["w"].tolist() == [10.0, 10.0] and ckpt.read_progress(best)["step"] == 10
    assert ckpt.read_best(tmp_path) == {"step": 10, "score": 2.5}
    ckpt.keep_as_best(tmp_path, ckpt.checkpoint_dir(tmp_path, 30), {"step": 30, "score": 1.5})
    state, _ = ckpt.read_weights(best / ckpt.EMA_FILE)
    assert state["w"].tolist() == [30.0, 30.0] and ckpt.read_best(tmp_path)["step"] == 30
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "step_0000030"]
    owned, foreign = owned_entries(tmp_path)  # --force removes it with the run
    assert best in owned and not foreign
