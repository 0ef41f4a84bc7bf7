"""The report's pure pieces: number formatting, table cells, the two renderers of one block list, the figures'
helpers."""

import math

from ddpmlab.report.plots import evenly_spaced, family_columns, loss_curves
from ddpmlab.report.render import (fmt_count, fmt_number, fmt_seconds, json_safe, metric_cell, render_html,
                                   render_markdown)


def test_numbers_as_text():
    assert fmt_number(12.3456) == "12.35" and fmt_number(None) == "n/a" and fmt_number(math.nan) == "n/a"
    assert (fmt_seconds(42), fmt_seconds(438), fmt_seconds(9000)) == ("42 s", "7.3 min", "2.5 h")
    assert (fmt_count(35_746_307), fmt_count(61_000), fmt_count(512)) == ("35.7 M", "61 k", "512")


def test_metric_cells_carry_their_spread():
    metrics = {"kid_inception": 0.0123, "kid_inception_std": 0.00045, "fd_classifier": 3.14159,
               "nll_bits_per_dim": 3.75, "nll_bits_per_dim_se": 0.012}
    assert metric_cell(metrics, "kid_inception") == "0.0123 ± 0.00045"
    assert metric_cell(metrics, "nll_bits_per_dim") == "3.75 ± 0.012"
    assert metric_cell(metrics, "fd_classifier") == "3.142" and metric_cell(metrics, "fid_inception") == "n/a"


def test_one_block_list_two_documents(tmp_path):
    import torch

    from ddpmlab.images import save_grid

    save_grid(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), tmp_path / "figures" / "a.png")
    blocks = [("h", 1, "A <b> & c"), ("p", "text"), ("table", "results", ["model", "FD"], [["x|y", "1.5"]]),
              ("images", [("grid", "figures/a.png")]), ("list", ["one"])]
    markdown = render_markdown(blocks)
    assert markdown.splitlines()[:7] == ["# A <b> & c", "", "text", "", "| model | FD |", "|---|---|",
                                         "| x\\|y | 1.5 |"]
    assert "![grid](figures/a.png)" in markdown and "- one" in markdown
    page = render_html(blocks, tmp_path, "t")
    assert "<h1>A &lt;b&gt; &amp; c</h1>" in page
    assert '<table id="results"><thead><tr><th>model</th><th>FD</th></tr></thead><tbody><tr><td>x|y</td>' in page
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page  # the PNG signature, embedded
    assert '<pre id="selfcheck" hidden>' in page and "#selfcheck{display:none}" in page  # for tests, never shown


def test_json_safe_turns_non_finite_into_null():
    assert json_safe({"a": [math.nan, 1.0], "b": {"c": math.inf}}) == {"a": [None, 1.0], "b": {"c": None}}


def test_figure_helpers():
    assert evenly_spaced(list(range(11)), 6) == [0, 2, 4, 6, 8, 10] and evenly_spaced([1, 2], 6) == [1, 2]
    assert family_columns("gan") == ("loss_d", "loss_g") and family_columns("diffusion") == ("loss",)
    rows = [{"step": 5, "loss": 1.0}, {"step": 10, "loss": None}, {"step": 15, "loss": math.inf},
            {"step": 20, "loss": 0.5}]
    assert loss_curves(rows, ("loss", "loss_d")) == {"loss": ([5, 20], [1.0, 0.5])}


def report_row(name: str, **changes) -> dict:
    row = {"name": name, "method": "ddpm", "sampler": "ddim 50 steps (50 NFE)", "step": 10,
           "metrics": {"fd_classifier": 1.0, "nll_bits_per_dim": 4.0},
           "protocols": {"nll": {"n": 200, "split": "test", "timesteps": 100, "seed": 0}},
           "stability": {"verdict": "stable", "cv": 0.01}, "seconds_per_1000": 50.0, "parameters": 1000,
           "speed": {"load_average_1min": 0.9, "torch_threads": 1},
           "training": {"train_wall_s": 600.0, "train_images_per_s": 1.57, "train_cpu_shared": False}}
    return {**row, **changes}


def test_training_speed_on_a_shared_cpu_is_flagged_like_the_sampling_timings():
    from ddpmlab.report.render import load_note, results_table

    shared = report_row("shared", training={"train_wall_s": 600.0, "train_images_per_s": 1.57,
                                            "train_cpu_shared": True})
    report = {"metrics": ["fd"], "n": 16, "rows": [report_row("alone"), shared]}
    _, rows = results_table(report)
    assert rows[0][-4:-1] == ["10 min", "1.57", "50"]
    assert rows[1][-4:-1] == ["10 min (CPU shared)", "1.57 (CPU shared)", "50"]
    note = load_note(report)
    assert "shared trained while other work shared the CPU" in note and "alone" not in note
    unknown = report_row("old", training={"train_wall_s": 600.0, "train_images_per_s": 1.57})
    assert "while old trained is not recorded" in load_note({**report, "rows": [unknown]})


def test_the_nll_column_says_what_it_was_measured_on():
    from ddpmlab.report.render import results_table

    header, _ = results_table({"metrics": ["fd", "nll"], "n": 16, "rows": [report_row("a"), report_row("b")]})
    assert "FD (n=16)" in header and "NLL (bits/dim) (200 test images, 100 timesteps each)" in header
