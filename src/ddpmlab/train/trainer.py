"""The training loop, one for every method: batch -> for each phase: loss -> backward -> clip -> step; EMA -> log.
The rest are named calls."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ddpmlab import distributed
from ddpmlab.config import Config, guide_stage_start
from ddpmlab.data import load_dataset, pick_views, to_model_batch
from ddpmlab.errors import UserError
from ddpmlab.eval.during_training import TrainingEvaluator
from ddpmlab.eval.speed import other_load
from ddpmlab.images import save_grid
from ddpmlab.methods import (Stage, batch_sizes, build_method, enter_stage, freeze_guide_if_due, optimizer_settings,
                             run_sampling, sample_images, stage_data, trained_parameters)
from ddpmlab.paths import storage_error
from ddpmlab.rng import resolve_device, seeded_generator
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.lock import RunLock
from ddpmlab.store.manifest import record_written
from ddpmlab.store.metrics_csv import MetricsLog, loss_columns
from ddpmlab.store.run_dir import check_new_run_dir
from ddpmlab.train import hotpath
from ddpmlab.train.ema import EMA
from ddpmlab.train.health import StepHealth, copy_buffers, restore_buffers
from ddpmlab.train.log import LogWindow, finished_note, plot_loss_curve
from ddpmlab.train.persistence import Persistence
from ddpmlab.train.signals import stop_requested_on_signals
from ddpmlab.train.tensorboard import check_tensorboard

VALIDATION_SEED = 1234


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up to `lr` over warmup_steps, then constant (Ho et al.)."""
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else lr


def scheduled_lr(step: int, lr: float, warmup_steps: int, steps: int, schedule: str = "constant",
                 end_factor: float = 0.0) -> float:
    """The learning rate of `step` (0-based) of `steps`: warmup_lr, then constant, or decayed towards
    lr_min = end_factor·lr by the fraction p of the post-warm-up steps done: cosine, lr_min + (lr − lr_min)(1 + cos πp)/2
    (SGDR without restarts, Loshchilov & Hutter 2017), or linear, lr − (lr − lr_min)p. p reaches 1 at step `steps`,
    one past the last step trained; a resume with other `steps` follows the new curve from where it is."""
    if schedule == "constant" or step < warmup_steps:
        return warmup_lr(step, lr, warmup_steps)
    lr_min = end_factor * lr
    p = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    if schedule == "cosine":
        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p))
    return lr - (lr - lr_min) * p


class Trainer(Persistence):
    """Trains the method `config.method` (a DDPM, or a VAE, DCGAN or VAE-GAN baseline) into `run_dir`.

    For a DDPM, `model` may be any backbone nn.Module with the `(x_t, t, labels=None)` signature; by default the
    config's UNet. `self.model` is the method's network (ddpmlab.methods.MethodNet), one optimizer per parameter
    group in `self.optimizers`. Use `Trainer.resume(run_dir)` to continue a run from its newest checkpoint.

    Under torchrun (an initialised process group; ddpmlab.distributed) every process trains its slice of
    each global batch of train.batch_size and the gradients are averaged over them; rank 0 alone writes the run.
    """
    def __init__(self, config: Config, run_dir: str | Path, model: nn.Module | None = None,
                 force: bool = False, progress: bool = True, _resuming: bool = False):
        self.processes = distributed.current()
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress and self.processes.is_main
        if not _resuming:
            distributed.on_main(lambda: check_new_run_dir(self.run_dir, force), self.processes)
        t = config.train
        self.device = distributed.rank_device(resolve_device(t.device, setting="train.device"), self.processes)
        for key, size in batch_sizes(config).items():
            self.rows = distributed.batch_rows(size, self.processes, key)  # this process's slice (per stage)
        torch.manual_seed(t.seed)
        self.generator = seeded_generator(self.device, t.seed)  # data order, t, noise, flips: on the GPU for CUDA
        self.train_data = load_dataset(config.data, "train")
        self.val_data = load_dataset(config.data, "val") if config.data.val_fraction > 0 else None
        if len(self.train_data) == 0:
            raise UserError(f"dataset {config.data.name!r} has no training images")
        for key, size in batch_sizes(config).items():
            if size > len(self.train_data):
                raise UserError(f"{key}={size} is larger than the {len(self.train_data)} training images of "
                                f"{config.data.name}; lower {key}")
        self.num_classes = self.train_data.num_classes if config.model.conditional else None
        if config.model.conditional and not self.num_classes:
            raise UserError(f"model.conditional=true but dataset {config.data.name!r} has no class labels")
        self.images, self.labels = self.place_training_data()
        self.layout = hotpath.memory_format(t.channels_last, self.device)  # of the weights and batches
        self.model = build_method(config, self.train_data.channels, self.train_data.image_size, self.num_classes,
                                  backbone=model).to(self.device, memory_format=self.layout)
        distributed.seed_other_ranks(t.seed, 0, self.processes)  # their own dropout
        self.ema = EMA(self.model, t.ema_decay, t.ema_warmup)
        self.lr, betas = optimizer_settings(config)
        self.groups = self.model.parameter_groups()
        fused = hotpath.resolve_switch(t.fused_adam, self.device)
        self.optimizers = {group: hotpath.adamw(params, self.lr, betas, t.weight_decay, fused)
                           for group, params in self.groups.items()}
        if t.compile:
            hotpath.compile_networks(self.model)  # after EMA's copy: the averaged network stays uncompiled
        # metrics.csv's column of each group's gradient norm: grad_norm for a single group, grad_norm_<group> for several
        self.grad_norm_columns = {group: "grad_norm" if len(self.groups) == 1 else f"grad_norm_{group}"
                                  for group in self.groups}
        self.grad_norms: dict[str, float] = {}  # {column: the last step's norm, read by the finiteness check}
        self.step, self.wall_s, self.session_start = 0, 0.0, None  # wall_s: seconds of earlier sessions
        self.saved_step: int | None = None  # the step of the newest checkpoint saved or loaded
        self.order, self.position = torch.empty(0, dtype=torch.long), 0
        self.data_kind, self.stage_data = None, None  # what the prepared data is (Stage.data), and it if not images
        self.stop_signal: int | None = None
        self.health, self.lock = StepHealth(config.train.max_bad_steps), None
        check_tensorboard(config.train)
        self.quality = distributed.on_main(self.build_evaluator, self.processes)  # rank 0's, if train.eval_every
        parameters = trained_parameters(self.model)
        self.description = (f"{config.method}, device {self.device}, {parameters:,} parameters, "
                            f"{len(self.train_data):,} training images "
                            f"({self.train_data.channels}×{self.train_data.image_size}×{self.train_data.image_size}) "
                            f"of {config.data.name}; "
                            + hotpath.describe(self.images.device, self.layout, fused, t.compile))
        self.log: MetricsLog | None = None  # rank 0's; None on the other processes
        if not _resuming:
            distributed.on_main(lambda: self.start_run_dir(force), self.processes)  # once everything above loaded

    # -- the loop --------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train until train.steps; a SIGINT/SIGTERM saves a checkpoint and returns early. Returns a summary.

        Holds the run's lock until it returns or raises. A write refused for lack of space or permission, or
        train.max_bad_steps non-finite steps in a row, stop the run with a UserError."""
        self.lock = distributed.on_main(lambda: self.lock if self.lock and self.lock.held else RunLock(self.run_dir),
                                        self.processes)  # rank 0 holds it
        try:
            return self.train_loop()
        except OSError as exc:
            error = storage_error(exc, f"to the run directory {self.run_dir}",
                                 f"free space or make it writable, then {ckpt.how_to_continue(self.run_dir)}")
            if error is None:
                raise
            raise error from None
        finally:
            if self.lock is not None:
                self.lock.release()

    def train_loop(self) -> dict:
        """`train` without the lock and the storage errors' translation around it."""
        t = self.config.train
        self.window = LogWindow()
        bar = tqdm(total=t.steps, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        self.session_start = time.perf_counter()
        with stop_requested_on_signals() as stop:
            while self.step < t.steps and not distributed.any_process(stop.requested, self.processes):
                step_start = time.perf_counter()
                stage = enter_stage(self.model, self.config, self.step)  # an LDM's autoencoder, then diffusion
                if stage.data != self.data_kind:  # an LDM's diffusion and guide stages train on latents, encoded once
                    self.data_kind = stage.data
                    self.stage_data = stage_data(self.model, stage, self.images, self.config.data.random_flip)
                x0, labels = self.next_batch(stage)
                lr = self.set_lr(stage)
                logs, buffers, self.grad_norms = {}, copy_buffers(self.model), {}  # norms of this step's groups
                for phase in self.phases(x0, labels):
                    optimizer = self.optimizers[phase.group]
                    optimizer.zero_grad(set_to_none=True)
                    phase.loss.backward()
                    distributed.average_gradients(self.groups[phase.group], self.processes)
                    grad_norm = nn.utils.clip_grad_norm_(self.groups[phase.group], t.grad_clip or float("inf"))
                    grad_norm = self.health.checked_grad_norm(phase.loss, grad_norm, phase.group, self.processes)
                    if grad_norm is None:
                        break
                    optimizer.step()
                    self.grad_norms[self.grad_norm_columns[phase.group]] = grad_norm
                    logs.update(phase.logs)  # tensors, read back only at log intervals
                if grad_norm is None:
                    self.skip_bad_step(buffers)
                    continue
                self.health.good_step()
                if self.processes.is_main:
                    self.ema.update(self.model, self.step - stage.first)
                    freeze_guide_if_due(self.model, self.ema.shadow, self.config, self.step + 1)  # autoguidance
                self.step += 1
                self.window.add(logs, stage.batch_size, time.perf_counter() - step_start)
                bar.update(1)
                self.after_step(lr, bar)
        bar.close()
        self.stop_signal = stop.signum
        self.wall_s, self.session_start = self.wall_clock(), None
        interrupted = self.step < t.steps
        if self.window.steps:  # the steps since the last log line (an interruption), not lost
            means, images_per_s = self.window.flush()
            means = distributed.mean_over_processes(means, self.processes)
            if self.processes.is_main:
                self.log.append(step=self.step, **means, lr=lr, **self.grad_norms, images_per_s=images_per_s,
                                wall_s=self.wall_s, other_load=other_load(), bad_steps=self.health.flush())
        if self.saved_step != self.step:
            self.save_checkpoint()
        if self.processes.is_main:
            if not interrupted and not (self.run_dir / "samples" / f"step_{self.step:07d}.png").exists():
                self.save_sample_grid()
            record_written(self.run_dir, self.run_dir / "loss.png")
            plot_loss_curve(self.run_dir / "metrics.csv", self.run_dir / "loss.png")
            self.log.close()
            if interrupted:
                self.run_log.note(f"interrupted at step {self.step} (signal {stop.signum}); checkpoint saved")
            else:
                self.run_log.note(finished_note(self.step))  # the last write: a resume now has nothing to do
        return {"step": self.step, "interrupted": interrupted, "signal": stop.signum, "wall_s": self.wall_s,
                "run_dir": str(self.run_dir)}

    def after_step(self, lr: float, bar) -> None:
        """Logging (the window's mean logs, the last step's gradient norms), validation, evaluation, sample grids and
        checkpoints, each when its interval comes round (an evaluated step is always logged)."""
        t = self.config.train
        evaluating = self.evaluation_due()  # the same on every process
        scores = {}
        if self.step % t.log_every == 0 or self.step == t.steps or evaluating:
            means, images_per_s = self.window.flush()  # first: its wait for the device counts as training time
            means = distributed.mean_over_processes(means, self.processes)
            if self.processes.is_main:
                scores = self.evaluate_samples() if evaluating else {}
                val_loss = self.validation_loss() if self.step % t.val_every == 0 else None
                self.log.append(step=self.step, **means, val_loss=val_loss, lr=lr, **self.grad_norms,
                                images_per_s=images_per_s, wall_s=self.wall_clock(), other_load=other_load(),
                                bad_steps=self.health.flush(),
                                **scores)
                bar.set_postfix({name: f"{means[name]:.4f}" for name in loss_columns(means)},
                                img_s=f"{images_per_s:.0f}", **{name: f"{value:.3g}" for name, value in scores.items()})
        if self.step % t.sample_every == 0 and self.processes.is_main:
            self.save_sample_grid()
        if self.step % t.checkpoint_every == 0:
            self.save_checkpoint()
        if evaluating and t.keep_best:
            self.keep_if_best(scores)

    def skip_bad_step(self, buffers: list[torch.Tensor]) -> None:
        """A step whose loss or gradient was not finite: its phase took no optimizer step (earlier phases' steps,
        taken on finite values, stand), the rest of the step is skipped, the forward passes' batch-norm statistics
        are undone and there is no EMA update. Noted on its first in a row; UserError at train.max_bad_steps."""
        restore_buffers(self.model, buffers)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        try:
            note = self.health.bad_step(self.step + 1)
        except UserError as exc:
            if self.processes.is_main:
                self.run_log.note(f"stopped: {exc}")
            raise
        if self.health.in_a_row == 1 and self.processes.is_main:
            self.run_log.note(note, warning=True)

    def wall_clock(self) -> float:
        """Seconds this run has spent training, over all sessions (validation, grids and checkpoints included)."""
        return self.wall_s + (time.perf_counter() - self.session_start if self.session_start is not None else 0.0)

    def set_lr(self, stage: Stage) -> float:
        """This step's learning rate in its `stage` (warm-up, then train.lr_schedule), set on every optimizer."""
        t = self.config.train
        lr = scheduled_lr(self.step - stage.first, stage.lr, t.warmup_steps, stage.end - stage.first, t.lr_schedule,
                          t.lr_end_factor)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    # -- pieces of a step --------------------------------------------------------------------------
    def phases(self, x0: torch.Tensor, labels: torch.Tensor | None):
        """The method's training phases for a batch, each phase's forward pass under autocast (its backward not)."""
        phases = self.model.training_phases(x0, self.generator, labels, self.rows)
        while True:
            with self.autocast():
                phase = next(phases, None)
            if phase is None:
                return
            yield phase

    def next_batch(self, stage: Stage) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's slice of the next global batch of stage.batch_size images of a seeded epoch permutation,
        as [-1, 1] floats on the device (converted and flipped there, in the weights' memory layout), with labels
        where the stage takes them (no label draws otherwise); in a stage that trains on encoded data
        (methods.stage_data: an LDM's latents), those images' rows of it."""
        size = stage.batch_size
        self.rows = distributed.batch_rows(size, self.processes)
        parts, count = [], 0
        while count < size:
            if self.position >= len(self.order):
                self.order = torch.randperm(len(self.train_data), generator=self.generator, device=self.generator.device)
                self.position = 0
            take = self.order[self.position:self.position + size - count]
            parts.append(take)
            count, self.position = count + len(take), self.position + len(take)
        index = torch.cat(parts)
        if self.stage_data is not None:
            x0 = pick_views(self.stage_data[index.to(self.stage_data.device)].to(self.device),
                            self.config.data.random_flip, self.generator)
        else:
            images = self.images[index.to(self.images.device)].to(self.device)
            x0 = to_model_batch(images, self.config.data.random_flip, self.generator)
        labels = self.training_labels(index) if stage.labelled else None
        return self.rows.take(x0).contiguous(memory_format=self.layout), self.rows.take(labels)

    def training_labels(self, index: torch.Tensor) -> torch.Tensor | None:
        """Class labels for a conditional model, replaced by the null label with probability class_dropout."""
        if not self.num_classes:
            return None
        labels = self.labels[index.to(self.labels.device)].to(self.device)
        drop = torch.rand(len(labels), generator=self.generator, device=self.generator.device)
        return torch.where(drop.to(self.device) < self.config.model.class_dropout, self.num_classes, labels)

    def place_training_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The uint8 training images and their labels where batches are gathered from: on the GPU when
        train.data_on_device says so (hotpath.data_device), else on the CPU."""
        where = hotpath.data_device(self.train_data, self.device, self.config.train.data_on_device)
        labels = self.train_data.labels
        return self.train_data.images.to(where), labels.to(where) if labels is not None else None

    def autocast(self):
        return hotpath.autocast(self.device, self.config.train.bf16)

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """The method's validation loss (L_simple for a DDPM, the negative ELBO for a VAE; None for the GANs) of the
        current weights in eval mode on fixed validation batches, with fixed draws of t, noise or latents."""
        if self.val_data is None or len(self.val_data) == 0:
            return None
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        size, losses = self.config.train.batch_size, []
        self.model.eval()
        try:
            for start in range(0, min(len(self.val_data), size * self.config.train.val_batches), size):
                images = self.val_data.images[start:start + size]
                labels = self.val_data.labels[start:start + size].to(self.device) if self.num_classes else None
                with self.autocast():
                    loss = self.model.validation_loss(to_model_batch(images, False, None).to(self.device), generator,
                                                      labels)
                if loss is None:
                    return None
                losses.append(loss.item())
        finally:
            self.model.train()
        return sum(losses) / len(losses)

    def save_sample_grid(self) -> Path:
        """A grid drawn by the EMA network from fixed noise (a DDPM with the run's sample.* settings):
        RUN_DIR/samples/step_XXXXXXX.png (and TensorBoard's `samples` image)."""
        n = self.config.train.sample_n
        generator = torch.Generator().manual_seed(self.config.train.seed)
        labels = torch.arange(n) % self.num_classes if self.num_classes else None
        images = sample_images(self.ema.shadow, n, generator, run_sampling(self.ema.shadow, self.config.sample), labels)
        if self.tensorboard is not None:
            self.tensorboard.grid("samples", images, self.step)
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        record_written(self.run_dir, path)
        return save_grid(images, path, scale=2)

    # -- evaluation during training (train.eval_every, train.keep_best) ---------------------------------
    def build_evaluator(self):
        """The TrainingEvaluator of train.eval_every > 0 (classifier and reference statistics loaded now, so that
        a missing one fails before training), else None."""
        if self.config.train.eval_every <= 0:
            return None

        return TrainingEvaluator(self.config, self.model, self.device, progress=self.progress)

    def evaluation_due(self) -> bool:
        """Whether this step is evaluated: every train.eval_every steps, and the last step, of those that train the
        sampled network (not an LDM's guide stage, after which its unguided samples do not change)."""
        every, last = self.config.train.eval_every, guide_stage_start(self.config) or self.config.train.steps
        return every > 0 and self.step <= last and (self.step % every == 0 or self.step == last)

    def evaluate_samples(self) -> dict[str, float]:
        """{"fd": ..., "fid": ...} of the EMA network's samples (rank 0)."""
        return self.quality.evaluate(self.ema.shadow)

    def keep_if_best(self, scores: dict[str, float]) -> None:
        """When rank 0's `scores` beat checkpoints/best/'s, make this step's checkpoint (saved now if this is not a
        checkpoint step) the new checkpoints/best/. Every process calls it, as a checkpoint needs them all."""
        better = self.processes.is_main and self.quality.is_best(scores, ckpt.read_best(self.run_dir))
        if not distributed.from_main(better, self.processes):
            return
        if self.saved_step != self.step:
            self.save_checkpoint()
        if self.processes.is_main:
            record = self.quality.best_record(scores, self.step)
            ckpt.keep_as_best(self.run_dir, ckpt.checkpoint_dir(self.run_dir, self.step), record)
            self.run_log.note(f"step {self.step}: {record['metric']} {record['score']:.4g}, the best so far: kept as "
                              f"checkpoints/{ckpt.BEST}")


