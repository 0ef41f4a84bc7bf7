import pytest
import torch

from ddpmlab import UserError
from ddpmlab.train import checkpoint as ckpt


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


def test_the_best_checkpoint_survives_the_rotation_and_is_replaced_whole(tmp_path):
    from ddpmlab.train.run_dir import owned_entries

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
