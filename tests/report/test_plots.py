"""The figures: a sweep's two panels readable (tick labels apart, a panel without timings saying so), loss figures
titled after the loss the runs trained on."""

import pytest

from ddpmlab.report import plots


def point(sampler: str, nfe: int, fd: float, seconds: float | None) -> dict:
    return {"sampler": sampler, "steps": nfe, "nfe": nfe, "spacing": "s", "seconds_per_1000": seconds,
            "metrics": {"fd_classifier": fd}}


def overlapping_tick_labels(ax, renderer) -> list[tuple[str, str]]:
    """Pairs of shown x tick labels (major and minor, inside the axis' range) whose boxes overlap."""
    low, high = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
              if t.get_visible() and t.get_text() and low <= t.get_position()[0] <= high]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.overlaps(other)]


@pytest.mark.parametrize("low, high", [(2, 20), (3, 45), (5, 75), (10, 1000)])
def test_sweep_tick_labels_never_overlap(low, high):
    import matplotlib.pyplot as plt

    figure = plots.sweep_figure([point("ddim", low, 5.0, low * 10.3), point("ddim", high, 4.0, high * 10.3),
                           point("heun", (low + high) // 2, 4.5, (low + high) * 5.2)], "fd_classifier", "t")
    figure.canvas.draw()
    for ax in figure.axes:
        assert overlapping_tick_labels(ax, figure.canvas.get_renderer()) == []
    plt.close(figure)


def test_a_sweep_without_timings_says_so_instead_of_an_empty_axis():
    import matplotlib.pyplot as plt

    figure = plots.sweep_figure([point("ddim", 5, 5.0, None), point("ddim", 10, 4.0, None)], "fd_classifier", "t")
    seconds = figure.axes[1]
    assert not seconds.lines and [t.get_text() for t in seconds.texts] == [
        "no timings: every point reused saved samples\nwhose timing was not kept"]
    plt.close(figure)


def test_loss_figures_are_titled_after_the_loss_trained_on():
    from ddpmlab.diffusion.process import loss_name

    v_min_snr = loss_name("v", "min-snr", 5.0)
    assert v_min_snr == "MSE on v, min-SNR-5 weighted" and loss_name("eps") == "L_simple (MSE on ε)"
    assert plots.family_title("diffusion", [{"name": "a", "loss": v_min_snr}]) == "diffusion models: MSE on v, min-SNR-5 weighted"
    assert plots.family_title("diffusion", [{"name": "a", "loss": v_min_snr}, {"name": "b", "loss": loss_name("eps")}]) == (
        "diffusion models: a MSE on v, min-SNR-5 weighted; b L_simple (MSE on ε)")
    assert plots.family_title("vae", [{"name": "v", "loss": None}]) == "VAEs: negative ELBO"
