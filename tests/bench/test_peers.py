"""`ddpmlab bench peers`: diffusers stays optional (a clear error without it); both CIFAR-10 networks have 35.7M
parameters; the paired run reports both sides and the median of per-round ratios."""

import json
import statistics
import subprocess
import sys

import pytest

from ddpmlab.cli import main


def test_without_diffusers_is_an_error_with_the_install_hint(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    assert main(["bench", "peers", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "pip install -e .[peers]" in err


def test_cli_and_bench_do_not_import_diffusers():
    code = "import sys, ddpmlab.cli, ddpmlab.bench; sys.exit('diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def _require_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("diffusers is not installed (pip install -e .[peers]): the peer networks cannot be built")
        pytest.skip("diffusers is not installed (pip install -e .[peers])")


def test_both_cifar10_networks_have_35_7M_parameters():
    _require_diffusers()
    from ddpmlab.bench.peers import cifar10_networks, parameter_count

    ours, theirs, _ = cifar10_networks()
    counts = {"ours": parameter_count(ours), "diffusers": parameter_count(theirs)}
    print(f"parameters: ddpmlab cifar10 {counts['ours']:,}, diffusers UNet2DModel (ddpm-cifar10-32) "
          f"{counts['diffusers']:,}")
    assert counts["ours"] == 35_746_307
    for count in counts.values():
        assert abs(count - 35.7e6) <= 0.01 * 35.7e6


def test_peers_smoke_one_round_reports_both_sides(capsys):
    _require_diffusers()
    assert main(["bench", "peers", "--batch-size", "1", "--rounds", "2", "--steps", "1", "--warmup", "0",
                 "--device", "cpu", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    train = result["train"]
    assert result["images_per_s"] == train["ours_images_per_s"] > 0 and train["theirs_images_per_s"] > 0
    assert train["ratios"] == pytest.approx([o / t for o, t in zip(train["ours_per_round"], train["theirs_per_round"])])
    assert train["ratio"] == pytest.approx(statistics.median(train["ratios"]))
    assert len(result["sample"]["ratios"]) == 2
    assert result["ours_parameters"] == result["theirs_parameters"] == 35_746_307


def test_peers_take_only_train_overrides(capsys):
    _require_diffusers()
    assert main(["bench", "peers", "model.channels=64", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench peers takes train.* overrides only") and err.count("\n") == 1
