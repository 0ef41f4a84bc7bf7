"""The classifier behind "FD": training it on ddpmlab's own data, saving it, finding and loading it.

A classifier file is safetensors with metadata (format, dataset, the images' identity, the network
spec, test accuracy, extractor id) and a JSON of the same facts beside it. The extractor id,
classifier-<dataset>-v1-<8 hex of the weights>, names exactly which weights produced a feature, so
cached reference statistics are never mixed across classifiers.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ddpmlab.config import DataConfig
from ddpmlab.data import WITH_TEST_SPLIT, ImageData, load_dataset, to_model_batch
from ddpmlab.errors import UserError
from ddpmlab.eval.cache import cache_dir, dataset_key, images_identity
from ddpmlab.eval.features import ClassifierFeatures
from ddpmlab.nets import Classifier
from ddpmlab.paths import check_writable_file
from ddpmlab.store.checkpoint import read_weights, weights_digest

FORMAT = "ddpmlab-classifier-1"
ARCHITECTURE = "v1"  # bump when Classifier changes shape, so old and new features never share an id
WARMUP_STEPS = 100


def held_out_split(cfg: DataConfig) -> str:
    """"test" for datasets with an official test split, else "val" (held out of train by data.val_fraction)."""
    return "test" if cfg.name in WITH_TEST_SPLIT else "val"


def training_split_identity(cfg: DataConfig) -> str | None:
    """Which images identity names a classifier: the images alone where an official test split is the reference;
    the training subset (val_fraction, limit) where the reference is the val split carved out of train, so that
    a classifier trained with another val_fraction, whose training images may be this reference, is another one."""
    return "train" if held_out_split(cfg) == "val" else None


def classifier_key(cfg: DataConfig) -> str:
    """The dataset key a classifier is filed under, e.g. "fashion-mnist" or "synthetic-1a2b3c4d"."""
    return dataset_key(cfg, training_split_identity(cfg))


def classifier_lr(step: int, steps: int, lr: float, warmup_steps: int = WARMUP_STEPS) -> float:
    """Linear warm-up over warmup_steps, then cosine decay from lr to 0 at `steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * lr * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_indices(count: int, batch_size: int, generator: torch.Generator):
    """Endless int64 index batches of `batch_size` walking through seeded permutations of range(count)."""
    order, position = torch.randperm(count, generator=generator), 0
    while True:
        parts, needed = [], batch_size
        while needed:
            if position == count:
                order, position = torch.randperm(count, generator=generator), 0
            take = order[position:position + needed]
            parts.append(take)
            position, needed = position + len(take), needed - len(take)
        yield torch.cat(parts)


@torch.no_grad()
def accuracy(model: Classifier, data: ImageData, batch_size: int = 500) -> float:
    """Fraction of `data`'s images whose argmax logit is their label, in [0, 1]."""
    device = next(model.parameters()).device
    correct = 0
    for images, labels in zip(data.images.split(batch_size), data.labels.split(batch_size)):
        logits = model(to_model_batch(images.to(device), False, None))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
    return correct / len(data)


def train_classifier(data_cfg: DataConfig, steps: int = 3000, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, progress: bool = True, device: str | torch.device = "cpu"
                     ) -> tuple[Classifier, float]:
    """(classifier in eval mode on `device`, accuracy on the held-out split) after `steps` AdamW steps.

    Trained on load_dataset(data_cfg, "train") with data.random_flip as configured; the same seed
    gives the same weights on the same device. Accuracy is on the "test" split (or "val" where the
    dataset has none).
    """
    if steps <= 0 or batch_size <= 0 or lr <= 0:
        raise UserError("--steps, --batch-size and --lr must be positive")
    train = load_dataset(data_cfg, "train")
    held_out = load_dataset(data_cfg, held_out_split(data_cfg))
    if not train.num_classes:
        raise UserError(f"dataset {data_cfg.name!r} has no class labels; a classifier needs them")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier(train.channels, train.image_size, train.num_classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batches = batch_indices(len(train), batch_size, generator)
    bar = tqdm(range(steps), desc=f"classifier {data_cfg.name}", disable=not progress, dynamic_ncols=True)
    for step in bar:
        index = next(batches)
        x = to_model_batch(train.images[index], data_cfg.random_flip, generator).to(device)
        loss = F.cross_entropy(model(x), train.labels[index].to(device))
        for group in optimizer.param_groups:
            group["lr"] = classifier_lr(step, steps, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, accuracy(model, held_out)


def classifier_extractor_id(data_cfg: DataConfig, state: dict[str, torch.Tensor]) -> str:
    """"classifier-<dataset key>-v1-<weights digest>", e.g. classifier-fashion-mnist-v1-1a2b3c4d."""
    return f"classifier-{classifier_key(data_cfg)}-{ARCHITECTURE}-{weights_digest(state)}"


def save_classifier(model: Classifier, path: str | Path, data_cfg: DataConfig, test_accuracy: float,
                    details: dict | None = None) -> Path:
    """Write `model` as safetensors with metadata, and a JSON of the same facts (+ `details`) beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    facts = {"format": FORMAT, "dataset": data_cfg.name, "dataset_key": classifier_key(data_cfg),
             "extractor_id": classifier_extractor_id(data_cfg, state), "test_accuracy": test_accuracy,
             "test_split": held_out_split(data_cfg), "data": images_identity(data_cfg, training_split_identity(data_cfg)),
             "spec": asdict(model.spec)}
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in facts.items()}
    save_file(state, str(path), metadata=metadata)
    path.with_suffix(".json").write_text(json.dumps({**facts, **(details or {})}, indent=1) + "\n")
    return path


def train_classifier_to_file(data_cfg: DataConfig, out: str | Path | None = None, steps: int = 3000,
                             batch_size: int = 128, lr: float = 2e-3, seed: int = 0, device: str | torch.device = "cpu",
                             progress: bool = True, command: str | None = None) -> dict:
    """Train (see `train_classifier`), save to `out` (default: the cache) and return the facts written to its JSON."""
    out = Path(out) if out is not None else default_classifier_path(data_cfg)
    if out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, got {out}")
    check_writable_file(out, "--out")
    start = time.perf_counter()
    model, test_accuracy = train_classifier(data_cfg, steps, batch_size, lr, seed, progress, device)
    details = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "random_flip": data_cfg.random_flip,
               "train_seconds": round(time.perf_counter() - start, 1), "device": str(device),
               "torch": torch.__version__, "command": command}
    save_classifier(model, out, data_cfg, test_accuracy, details)
    return {**json.loads(out.with_suffix(".json").read_text()), "path": str(out)}


def shipped_classifier(key: str) -> Path | None:
    """The classifier shipped in the package for dataset key `key` (assets/classifier-<key>.safetensors), if any."""
    asset = resources.files("ddpmlab") / "assets" / f"classifier-{key}.safetensors"
    return Path(str(asset)) if asset.is_file() else None


def default_classifier_path(data_cfg: DataConfig) -> Path:
    """Where `ddpmlab eval train-classifier` writes by default: <cache>/classifiers/<dataset key>.safetensors."""
    return cache_dir("classifiers", f"{classifier_key(data_cfg)}.safetensors")


def find_classifier(data_cfg: DataConfig) -> Path:
    """The shipped classifier for these images, else the cached one; a UserError naming the fix otherwise."""
    key = classifier_key(data_cfg)
    for candidate in (shipped_classifier(key), default_classifier_path(data_cfg)):
        if candidate is not None and candidate.is_file():
            return candidate
    raise UserError(f"no FD classifier for dataset {key!r} (looked in the package and {default_classifier_path(data_cfg)}); "
                    f"train one: {train_classifier_command(data_cfg)}")


def train_classifier_command(data_cfg: DataConfig) -> str:
    """The `ddpmlab eval train-classifier` command for the images of `data_cfg`: every data.* key that differs from
    the dataset's defaults carried over (where the files are, how a bad image is handled, ...), quoted for a shell."""
    defaults = asdict(DataConfig(name=data_cfg.name))
    overrides = [f"data.{key}={_override_text(value)}" for key, value in asdict(data_cfg).items()
                 if key != "name" and value != defaults[key]]
    return " ".join(["ddpmlab eval train-classifier", shlex.quote(data_cfg.name), *map(shlex.quote, overrides)])


def _override_text(value) -> str:
    """`value` as the YAML text of a key=value override: plain where YAML reads it back unchanged, else JSON."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def load_classifier(source: str | Path | DataConfig, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """(Classifier in eval mode on `device`, its facts) from a file path, a dataset name or a DataConfig.

    Facts: dataset, dataset_key, extractor_id, test_accuracy, test_split, data (images identity), spec, path.
    """
    if isinstance(source, DataConfig):
        path = find_classifier(source)
    elif Path(source).suffix == ".safetensors" or Path(source).exists():
        path = Path(source)
        if not path.is_file():
            raise UserError(f"classifier file not found: {path}; train one with ddpmlab eval train-classifier DATASET --out {path}")
    else:
        path = find_classifier(DataConfig(name=str(source)))
    state, metadata = read_weights(path, FORMAT, "ddpmlab classifier")
    try:
        facts = {k: v if k in ("format", "dataset", "dataset_key", "extractor_id", "test_split") else json.loads(v)
                 for k, v in metadata.items()}
        model = Classifier.from_spec(facts["spec"])
        model.load_state_dict(state)
    except (KeyError, TypeError, json.JSONDecodeError):
        raise UserError(f"{path}: classifier metadata is missing or corrupt; train it again") from None
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the stored spec ({str(exc).splitlines()[0][:150]})") from None
    if not facts["extractor_id"].endswith(weights_digest(state)):
        raise UserError(f"{path}: weights do not match their extractor id {facts['extractor_id']}; the file was altered")
    return model.to(device).eval(), {**facts, "path": str(path)}


def classifier_features(source: str | Path | DataConfig, device: str | torch.device = "cpu"
                        ) -> tuple[ClassifierFeatures, dict]:
    """(ClassifierFeatures named by the classifier's extractor id, its facts); see `load_classifier`."""
    model, facts = load_classifier(source, device)
    return ClassifierFeatures(model, facts["extractor_id"], device), facts


def check_classifier_fits(facts: dict, data_cfg: DataConfig, channels: int, image_size: int) -> None:
    """UserError unless the classifier was trained on `data_cfg`'s dataset at this channel count and size."""
    spec = facts["spec"]
    if facts["dataset"] != data_cfg.name or (spec["in_channels"], spec["image_size"]) != (channels, image_size):
        raise UserError(f"classifier {facts['path']} was trained on {facts['dataset']} "
                        f"({spec['in_channels']}×{spec['image_size']}²), not {data_cfg.name} ({channels}×{image_size}²); "
                        f"pass --classifier for this dataset or train one with {train_classifier_command(data_cfg)}")
    if held_out_split(data_cfg) == "val":
        # the reference is the fixed-seed draw of round(N·val_fraction) training images, nested in any larger
        # fraction's draw: disjoint from the classifier's training images only if its val_fraction is at least ours
        trained_fraction = facts.get("data", {}).get("val_fraction")
        if trained_fraction is None or trained_fraction < data_cfg.val_fraction:
            raise UserError(f"classifier {facts['path']} was trained with data.val_fraction={trained_fraction}, so its "
                            f"training images overlap this run's reference (the val split, data.val_fraction="
                            f"{data_cfg.val_fraction}); train one with: {train_classifier_command(data_cfg)}")
