"""`ddpmlab eval` on a baseline run: FD and speed work as for a DDPM, the samples are the network's one pass."""

import json
import math

import numpy as np
import torch

from ddpmlab.cli import main
from ddpmlab.eval.samples import generate_samples
from ddpmlab.store.load import load_trained


def test_fd_and_speed_of_a_vae_run(synthetic_classifier, tmp_path, capsys):
    classifier, facts = synthetic_classifier
    run = tmp_path / "vae"
    assert main(["train", "tiny", "method=vae", "train.steps=10", "--run-dir", str(run), "--quiet"]) == 0
    argv = ["eval", str(run), "--metrics", "fd,speed", "--classifier", str(classifier), "--n", "32",
            "--batch-size", "16", "--speed-repeats", "1", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    assert "FD (classifier features)" in capsys.readouterr().out
    results = json.loads((run / "eval" / "step_0000010-vae-n32-seed0.json").read_text())
    numbers = results["metrics"]
    for key in ("fd_classifier", "sampling_images_per_s", "train_images_per_s"):
        assert math.isfinite(numbers[key]) and numbers[key] > 0, key
    assert results["extractors"] == {"fd_classifier": facts["extractor_id"]}
    settings = results["settings"]
    assert (settings["sampler"], settings["steps"], settings["eta"], settings["clip_denoised"]) == ("vae", None, None, None)
    assert results["speed"]["steps"] is None and results["speed"]["batch_size"] == 16
    # the kept samples are the EMA network's one pass with the seed, in batches of 16
    net, schedule, config, _ = load_trained(run)
    expected, labels = generate_samples(net, 32, None, batch_size=16, seed=0, progress=False)
    with np.load(run / "eval" / "step_0000010-vae-n32-seed0.npz") as samples:
        assert np.array_equal(samples["images"], expected.permute(0, 2, 3, 1).numpy()) and labels is None
    # the same settings again: the samples are reused and FD repeats exactly
    assert main(argv[:3] + ["fd"] + argv[4:]) == 0
    again = json.loads((run / "eval" / "step_0000010-vae-n32-seed0.json").read_text())
    assert again["samples"]["reused"] and again["metrics"]["fd_classifier"] == numbers["fd_classifier"]
    assert not torch.equal(expected[:16], expected[16:])
