"""metrics.csv: columns fixed per run (header written once, kept on resume), rows past a resumed step dropped."""

import pytest

from ddpmlab.store.metrics_csv import COLUMNS, MetricsLog, loss_columns, read_metrics
from ddpmlab.train.log import plot_loss_curve


def test_columns_are_per_run_and_the_header_survives_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, columns=COLUMNS + ("loss_d", "loss_g"))
    log.append(step=5, loss_d=1.25, loss_g=0.5, lr=1e-4)
    log.append(step=10, loss_d=1.0, loss_g=0.75, lr=2e-4)
    log.append(step=15, loss_d=0.5, loss_g=1.0, lr=2e-4)
    header = path.read_text().splitlines()[0]
    assert header == ",".join(COLUMNS) + ",loss_d,loss_g"
    resumed = MetricsLog(path, resume_step=10, columns=COLUMNS)  # the file's header wins over the given columns
    assert resumed.columns == COLUMNS + ("loss_d", "loss_g") and path.read_text().splitlines()[0] == header
    resumed.append(step=12, loss_d=2.0, loss_g=0.25)
    rows = read_metrics(path)
    assert [(r["step"], r["loss_d"], r["loss_g"]) for r in rows] == [(5, 1.25, 0.5), (10, 1.0, 0.75), (12, 2.0, 0.25)]
    assert rows[0]["loss"] is None and rows[1]["lr"] == 2e-4
    with pytest.raises(ValueError, match="no column for recon"):
        resumed.append(step=13, recon=1.0)
    assert loss_columns(rows[0]) == ["loss", "loss_d", "loss_g"]
    assert plot_loss_curve(path, tmp_path / "loss.png").stat().st_size > 0  # both players; `loss` is empty


def test_the_default_columns_are_every_runs(tmp_path):
    MetricsLog(tmp_path / "metrics.csv").append(step=1, loss=0.5)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [",".join(COLUMNS), "1,0.5" + "," * (len(COLUMNS) - 2)]
    assert plot_loss_curve(tmp_path / "metrics.csv", tmp_path / "loss.png") is not None


def test_resume_adds_new_columns_and_drops_a_row_cut_short(tmp_path):
    """A metrics.csv written before a column existed gains it on resume; a last row a crash cut short is dropped."""
    path = tmp_path / "metrics.csv"
    old = COLUMNS[:-1]  # before bad_steps
    path.write_text(",".join(old) + "\n5,0.5,,0.001,1.5,100,2.0\n10,0.25,0.3,0.001,1.25,100,4.0\n15,0.2")
    log = MetricsLog(path, resume_step=12, columns=COLUMNS)
    assert log.columns == COLUMNS
    log.append(step=12, loss=0.125, bad_steps=2)
    rows = read_metrics(path)
    assert [(r["step"], r["loss"], r["val_loss"], r["bad_steps"]) for r in rows] == [
        (5, 0.5, None, None), (10, 0.25, 0.3, None), (12, 0.125, None, 2.0)]


def test_resume_adds_the_columns_the_file_lacks_at_its_end(tmp_path):
    path = tmp_path / "metrics.csv"
    MetricsLog(path).append(step=5, loss=0.5)
    resumed = MetricsLog(path, resume_step=5, columns=COLUMNS + ("fd",))  # evaluation switched on at resume
    resumed.append(step=10, loss=0.25, fd=12.5)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS) + ",fd"
    assert [(r["step"], r["loss"], r["fd"]) for r in read_metrics(path)] == [(5, 0.5, None), (10, 0.25, 12.5)]


def test_smoke_the_loss_plot_takes_the_scores_on_a_second_axis(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, columns=COLUMNS + ("fd", "fid"))
    for step in (5, 10, 15):
        log.append(step=step, loss=1.0 / step, fd=20.0 - step if step % 10 == 0 else None, fid=30.0)
    assert plot_loss_curve(path, tmp_path / "loss.png").stat().st_size > 0
