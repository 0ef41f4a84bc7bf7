"""`ddpmlab eval SAMPLES --reference REF`: any generator's images scored as clean-fid and pytorch-fid users do.

SAMPLES and REF are each a .npz of images, a folder of image files or a dataset split NAME:SPLIT (read by
eval/image_sources.py).
The metrics, result keys, protocols and table are `ddpmlab eval`'s; REF's features are cached by content (a dataset's
by its images' identity, a file's by the SHA-256 of its images). FD's classifier reads one image shape, so SAMPLES and
REF of different shapes are refused for it; Inception resizes every image to 299×299 RGB, so FID, KID and P/R compare
them, with a warning.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from ddpmlab.commands.evaluate import merge_results
from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.eval.cache import images_sha256
from ddpmlab.eval.classifier import classifier_features
from ddpmlab.eval.image_sources import ImageSource, describe, image_source, read_images
from ddpmlab.eval.reference import images_features, reference_features
from ddpmlab.eval.scores import (FEATURE_BATCH, FEATURE_METRICS, METRICS, MIN_FID_SAMPLES, check_pr_counts,
                                 distance_scores, extractor_ids, needed_extractors, parse_metrics)
from ddpmlab.paths import check_writable_file, safe_name
from ddpmlab.report.tables import results_table
from ddpmlab.rng import resolve_device
from ddpmlab.store.checkpoint import PROGRESS_FILE, list_checkpoints
from ddpmlab.store.diffusers_format import is_diffusers_folder
from ddpmlab.store.hub import hub_source
from ddpmlab.store.pretrained import is_pretrained_folder, pretrained_name
from ddpmlab.version import __version__

# `ddpmlab eval` flags that only a model reads: (argparse dest, flag)
MODEL_FLAGS = (("sampler", "--sampler"), ("steps", "--steps"), ("spacing", "--spacing"), ("sweep", "--sweep"),
               ("eta", "--eta"), ("variance", "--variance"), ("batch_size", "--batch-size"), ("seed", "--seed"),
               ("no_ema", "--no-ema"), ("name", "--name"), ("nll_n", "--nll-n"), ("nll_timesteps", "--nll-timesteps"),
               ("speed_repeats", "--speed-repeats"), ("guidance", "--guidance"),
               ("guidance_interval", "--guidance-interval"))
MODEL_METRICS = {"nll": "the variational bound of a diffusion model on real images",
                 "speed": "a model's sampling speed and training cost"}


def holds_model(folder: Path) -> bool:
    """Whether `folder` is a run directory, a checkpoint, a shipped model's or a diffusers model's folder."""
    return ((folder / PROGRESS_FILE).is_file() or (folder / "config.yaml").is_file() or is_pretrained_folder(folder)
            or is_diffusers_folder(folder) or bool(list_checkpoints(folder)))


def names_images(text: str) -> bool:
    """Whether the positional of `eval ... --reference REF` names images to score (a .npz, a folder that holds no
    model, NAME:SPLIT) rather than a model (a run, a checkpoint, a weights file, pretrained:NAME, hf:ORG/NAME)."""
    path = Path(text).expanduser()
    if path.suffix.lower() == ".npz":
        return True
    if path.exists():
        return path.is_dir() and not holds_model(path)
    return ":" in str(text) and pretrained_name(text) is None and hub_source(text) is None


def check_image_flags(args) -> None:
    """UserError naming the first flag given that only a model reads, and --metrics nll or speed."""
    given = [flag for name, flag in MODEL_FLAGS if getattr(args, name, None) not in (None, False)]
    if given:
        raise UserError(f"{given[0]} applies to a model; {args.run_dir} is images (scored as they are, against "
                        f"--reference): leave {given[0]} out")
    asked = {m.strip().lower() for m in (args.metrics or "").split(",")}
    for name, what in MODEL_METRICS.items():
        if name in asked:
            raise UserError(f"--metrics {name} measures {what}, and images have no model: leave it out (metrics of "
                            f"images: {','.join(FEATURE_METRICS)})")


def results_path(samples: ImageSource, reference: ImageSource, out: str | None) -> Path:
    """--out FILE.json, or SAMPLES-vs-REF.json beside SAMPLES (in the current folder for a dataset split)."""
    if out is not None:
        path = Path(out)
        if path.suffix != ".json":
            raise UserError(f"--out names the results file when scoring images: FILE.json, got {out}")
    else:
        folder = samples.path.resolve().parent if samples.path is not None else Path(".")
        path = folder / f"{safe_name(samples.label)}-vs-{safe_name(reference.label)}.json"
    check_writable_file(path, "--out")
    return path


def check_replaceable(path: Path, settings: dict, force: bool) -> None:
    """UserError when `path` holds anything but results of these same images (which new metrics join), unless
    `force`."""
    if force or not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or old.get("settings") != settings:
        raise UserError(f"{path} exists and holds other results than these images'; pass --force to replace it, or "
                        f"--out another FILE.json")


def check_shapes(metrics: list[str], samples: ImageSource, fake: torch.Tensor, reference: ImageSource,
                 real: torch.Tensor) -> None:
    """UserError for images of different shapes when FD is asked (one classifier reads one shape); a warning for
    the Inception metrics, which resize every image to 299×299 RGB."""
    if fake.shape[1:] == real.shape[1:]:
        return
    shapes = (f"SAMPLES {samples.text} are {'×'.join(map(str, fake.shape[1:]))} images (C×H×W), --reference "
              f"{reference.text} {'×'.join(map(str, real.shape[1:]))}")
    if "fd" in metrics:
        raise UserError(f"{shapes}: FD's classifier reads one shape; give images of the same shape, or use --metrics "
                        f"fid (Inception resizes every image to 299×299)")
    warnings.warn(f"{shapes}: Inception resizes both to 299×299 RGB, so the distance includes that of the sizes",
                  DdpmlabWarning, stacklevel=3)


def score_extractors(metrics: list[str], sides: tuple[ImageSource, ImageSource], shape: tuple[int, ...],
                     classifier: str | None, device: torch.device) -> tuple[dict, dict]:
    """needed_extractors for images of `shape` (C×H×W): FD's classifier is --classifier or, where a side is a dataset
    split (REF's first), that dataset's; with neither, a UserError that says to pass one or leave FD out."""
    data = next((side.data for side in reversed(sides) if side.kind == "dataset"), None)
    if "fd" not in metrics or data is not None:
        return needed_extractors(metrics, data, shape[0], shape[-1], classifier, device)
    if classifier is None:
        raise UserError(f"FD needs a classifier of images like these ({'×'.join(map(str, shape))}), and neither side "
                        f"is a dataset split that has one: pass --classifier FILE (`ddpmlab eval train-classifier "
                        f"DATASET --out FILE`) or use --metrics fid")
    extractors, _ = needed_extractors([m for m in metrics if m != "fd"], None, shape[0], shape[-1], None, device)
    extractors["classifier"], facts = classifier_features(classifier, device)
    spec = facts["spec"]
    if (spec["in_channels"], spec["image_size"], spec["image_size"]) != tuple(shape):
        raise UserError(f"classifier {facts['path']} reads {spec['in_channels']}×{spec['image_size']}×"
                        f"{spec['image_size']} images ({facts['dataset']}), these are {'×'.join(map(str, shape))}; "
                        f"pass a --classifier trained on images like these, or use --metrics fid")
    return extractors, facts


def side_features(source: ImageSource, images: torch.Tensor, extractor, kind: str, cached: bool,
                  progress: bool) -> tuple:
    """(N×D features, info) of one side's `images`: a dataset's through its cached reference statistics, a file's
    cached by content when `cached` (REF), else extracted (SAMPLES)."""
    batch = FEATURE_BATCH[kind]
    if source.kind == "dataset":
        features, _, info = reference_features(source.data, source.split, extractor, len(images), batch, progress)
        return features, info
    if cached:
        features, _, info = images_features(images, extractor, batch, progress)
        return features, {**info, "source": source.text}
    return extractor.extract(images, batch_size=batch, progress=progress), {"count": len(images)}


def both_features(extractors: dict, samples: tuple, reference: tuple, results: dict, progress: bool) -> tuple:
    """({kind: SAMPLES' features}, {kind: REF's}) of each (source, images) side, noting in `results` REF's cache
    info ("reference") and each extractor's seconds ("timings_s")."""
    fake, real = {}, {}
    for kind, extractor in extractors.items():
        start = time.perf_counter()
        real[kind], results["reference"][extractor.extractor_id] = side_features(*reference, extractor, kind, True,
                                                                                 progress)
        fake[kind], _ = side_features(*samples, extractor, kind, False, progress)
        results["timings_s"][f"features_{kind}"] = time.perf_counter() - start
    return fake, real


def side_name(facts: dict) -> str:
    """What a protocol names one side by: its images' SHA-256, or DATASET:SPLIT."""
    return facts.get("sha256") or f"{facts['dataset']}:{facts['split']}"


def score_images(samples: str, reference: str, *, metrics: str | None = None, n: int | None = None,
                 ref_n: int | None = None, device: str = "auto", classifier: str | None = None, out: str | None = None,
                 force: bool = False, progress: bool = True) -> dict:
    """Score the images `samples` names against those `reference` names (eval/image_sources.py's forms): min(n, all)
    of each (REF: min(ref_n, all) when given; default all), with FEATURE_METRICS `metrics` (default: the device's).
    Writes and returns the results dict (keys as `evaluate_run`'s; "json": where it went)."""
    # Check the request.
    device = resolve_device(device)
    metrics = parse_metrics(metrics, device, FEATURE_METRICS)
    if any(count is not None and count < 2 for count in (n, ref_n)):
        raise UserError("--n and --ref-n must be at least 2 (a covariance needs two images)")
    samples, reference = image_source(samples, "SAMPLES"), image_source(reference, "--reference")
    path = results_path(samples, reference, out)

    # Read the images.
    fake, real = read_images(samples, n), read_images(reference, n if ref_n is None else ref_n)
    if min(len(fake), len(real)) < 2:
        raise UserError(f"{samples.text if len(fake) < 2 else reference.text}: one image; a covariance needs two")
    check_pr_counts(metrics, n=len(fake), ref_n=len(real))
    check_shapes(metrics, samples, fake, reference, real)
    if min(len(fake), len(real)) < MIN_FID_SAMPLES and any(METRICS[m].extractor == "inception" for m in metrics):
        warnings.warn(f"FID/KID/PR on {min(len(fake), len(real))} images: below {MIN_FID_SAMPLES} (the Inception "
                      f"feature dimension) FID is biased high", DdpmlabWarning, stacklevel=2)
    extractors, classifier_facts = score_extractors(metrics, (samples, reference), tuple(fake.shape[1:]), classifier,
                                                    device)
    sides = {"samples": describe(samples, fake, images_sha256(fake) if samples.kind != "dataset" else None),
             "reference": describe(reference, real, images_sha256(real) if reference.kind != "dataset" else None)}
    settings = {"n": len(fake), **sides}
    check_replaceable(path, settings, force)

    # Score.
    results = {"name": path.stem, "samples_source": samples.text, "reference_source": reference.text,
               "reference_split": reference.split, "metrics_requested": metrics, "settings": settings, "metrics": {},
               "protocols": {}, "extractors": {}, "reference": {}, "timings_s": {}, "device": str(device),
               "ddpmlab": __version__, "torch": torch.__version__,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    fake_features, real_features = both_features(extractors, (samples, fake), (reference, real), results, progress)
    start = time.perf_counter()
    results["metrics"] = distance_scores(metrics, extractors, real_features, fake_features, device)
    results["timings_s"]["distances"] = time.perf_counter() - start
    results["extractors"] = extractor_ids(extractors, results["metrics"])
    protocol = {"n": len(fake), "samples": side_name(sides["samples"]), "reference": side_name(sides["reference"]),
                "reference_split": reference.split, "reference_n": len(real)}
    results["protocols"] = {m: protocol for m in metrics}
    if classifier_facts:
        results["classifier"] = {k: classifier_facts[k]
                                 for k in ("path", "extractor_id", "test_accuracy", "test_split")}

    # Write the results.
    results = merge_results(path, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return {**results, "json": str(path)}


def run(args) -> int:
    """`ddpmlab eval SAMPLES --reference REF`."""
    check_image_flags(args)
    results = score_images(args.run_dir, args.reference, metrics=args.metrics, n=args.n, ref_n=args.ref_n,
                           device=args.device, classifier=args.classifier, out=args.out, force=args.force,
                           progress=not args.quiet)
    print(results_table(results))
    print(f"wrote {results['json']}")
    return 0
