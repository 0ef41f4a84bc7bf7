"""The trainer's side of the disk: a run directory's files when a run starts or resumes, and its checkpoints.

A mixin of ddpmlab.train.Trainer, so that trainer.py holds the loop alone; it reads and writes the Trainer's state
(model, EMA, optimizers, generators, step) and nothing of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ddpmlab import distributed
from ddpmlab.config import (apply_overrides, eval_metric_names, guide_replaced, guide_stage_start, load_config,
                            resume_changes, save_config)
from ddpmlab.diffusion.schedule import NEAR_PURE_NOISE
from ddpmlab.errors import UserError
from ddpmlab.methods import stored_spec
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import trained_config
from ddpmlab.store.lock import RunLock
from ddpmlab.store.manifest import record_written
from ddpmlab.store.metrics_csv import COLUMNS, MetricsLog
from ddpmlab.store.run_dir import prepare_run_dir, remove_unfinished_writes
from ddpmlab.train import hotpath
from ddpmlab.train.log import RunLog, finished_at
from ddpmlab.train.tensorboard import tensorboard_log


def generator_key(generator: torch.Generator) -> str:
    """The name of a run's generator state in rng.pt: "generator" for the CPU's, "device_generator" for a GPU's."""
    return "generator" if generator.device.type == "cpu" else "device_generator"


def with_fresh_guide(stored: dict, fresh: dict) -> dict:
    """A checkpoint's state dict with an LDM's guide (its weights and guide_ready) taken from `fresh`, a new model's
    state dict: the guide that a resume replaces (config.guide_replaced)."""
    def is_guide(key: str) -> bool:
        return key.startswith(("guide.", "guide_ready"))
    return {**{key: value for key, value in stored.items() if not is_guide(key)},
            **{key: value for key, value in fresh.items() if is_guide(key)}}


class Persistence:
    """Start, resume and checkpoint a Trainer's run directory."""

    def start_run_dir(self, force: bool) -> None:
        """Take the run's lock, then prepare the run directory of a new run: its manifest, config, metrics.csv and
        run.log."""
        self.lock = RunLock(self.run_dir)  # before --force removes anything: never under a live run
        try:
            prepare_run_dir(self.run_dir, force)
        except BaseException:
            self.lock.release()
            raise
        self.record_run_files()
        save_config(self.config, self.run_dir / "config.yaml")
        self.log = MetricsLog(self.run_dir / "metrics.csv", columns=self.metric_columns())
        self.start_session_log()

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | None = None, model: nn.Module | None = None,
               progress: bool = True) -> "Persistence":
        """A Trainer restored from the newest intact checkpoint of `run_dir`, with `key=value` overrides applied.

        It takes the run's lock first (UserError while another process trains the run), removes the temporary files
        of writes an interrupted session left, and falls back past damaged checkpoints (warning which, and moving
        them aside to step_XXXXXXX.damaged)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir}: not a ddpmlab run directory (no config.yaml)")
        lock = distributed.on_main(lambda: RunLock(run_dir), distributed.current())  # rank 0 owns the run
        try:
            trainer = cls._resume_owned(run_dir, overrides, model, progress)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        trainer.lock = lock
        return trainer

    @classmethod
    def _resume_owned(cls, run_dir: Path, overrides: list[str] | None, model: nn.Module | None,
                      progress: bool) -> "Persistence":
        config_path = run_dir / "config.yaml"
        saved = load_config(str(config_path))
        config = apply_overrides(saved, overrides or [])
        unfinished = distributed.on_main(lambda: remove_unfinished_writes(run_dir), distributed.current())
        newest, damaged = ckpt.newest_intact(run_dir)
        if newest is None:
            raise UserError(f"{run_dir}: no checkpoint to resume from"
                            + "".join(f"; {folder.name} is damaged: {reason}" for folder, reason in damaged))
        step, trained = int(ckpt.read_progress(newest)["step"]), trained_config(newest)
        resume_changes(trained, saved, step, f" by editing {config_path}")  # the checkpoint's record, not the file's
        resume_changes(trained, config, step)
        trainer = cls(config, run_dir, model=model, progress=progress, _resuming=True)
        new_guide = guide_replaced(trained, config, step)
        trainer.load_checkpoint(newest, new_guide=new_guide)
        if config.train.steps == step and finished_at(run_dir / "run.log", step):  # before anything is written
            raise UserError(f"{run_dir} already finished at step {step} (train.steps={step}): nothing to train; to "
                            f"train on, raise train.steps, e.g. `ddpmlab train --resume {run_dir} "
                            f"train.steps={2 * step}`")
        distributed.on_main(lambda: trainer.continue_run_dir(unfinished, damaged), trainer.processes)  # all have read
        if new_guide and trainer.processes.is_main:
            trainer.run_log.note(f"a new guide: ldm.guide_channels={config.ldm.guide_channels}, trained from scratch "
                                 f"for ldm.guide_steps={config.ldm.guide_steps} steps from step "
                                 f"{guide_stage_start(config)} in place of the checkpoint's")
        return trainer

    def continue_run_dir(self, unfinished: list[Path] = (), damaged: list[tuple[Path, str]] = ()) -> None:
        """Continue a resumed run's directory: its (overridden) config, metrics.csv from the checkpoint, run.log,
        noting the `unfinished` writes removed and moving the `damaged` checkpoints aside (warned about)."""
        self.record_run_files()
        self.log = MetricsLog(self.run_dir / "metrics.csv", resume_step=self.step, columns=self.metric_columns())
        save_config(self.config, self.run_dir / "config.yaml")  # after metrics.csv was read: a refusal changes nothing
        self.start_session_log(resumed_from=self.step)
        if unfinished:
            self.run_log.note(f"removed {len(unfinished)} unfinished write(s) of an interrupted session: "
                              + ", ".join(str(path.relative_to(self.run_dir)) for path in unfinished))
        for folder, reason in damaged:
            aside = ckpt.move_aside(folder)
            self.run_log.note(f"checkpoint {folder.name} is damaged ({reason}); resumed from step_{self.step:07d} "
                              f"instead and moved the damaged one to {aside.relative_to(self.run_dir)}", warning=True)
        keep = self.config.train.keep_checkpoints
        pruned = ckpt.prune_checkpoints(self.run_dir, keep)
        if pruned:
            self.run_log.note(f"deleted {len(pruned)} checkpoint(s) beyond train.keep_checkpoints={keep} that an "
                              f"interrupted session left: "
                              + ", ".join(folder.name for folder in pruned))

    def record_run_files(self) -> None:
        """List the files every session writes in the run's manifest, before they are written."""
        record_written(self.run_dir, *(self.run_dir / name for name in ("config.yaml", "metrics.csv", "run.log")))

    def start_session_log(self, resumed_from: int | None = None) -> None:
        """Note this session in RUN_DIR/run.log, and warn (stderr and log) about a schedule that ends far from noise;
        with train.tensorboard, mirror metrics.csv to RUN_DIR/tensorboard."""
        self.tensorboard = self.log.mirror = tensorboard_log(self.run_dir, self.config.train, resumed_from)
        self.run_log = RunLog(self.run_dir / "run.log")
        self.run_log.note(("resumed at step %d: " % resumed_from if resumed_from is not None else "new run: ")
                          + self.description)
        schedule = None if self.model.SINGLE_PASS else self.model.schedule
        if schedule is not None and schedule.final_alpha_cumprod > NEAR_PURE_NOISE:
            final = schedule.final_alpha_cumprod
            self.run_log.note(f"the noise schedule ends at alpha_bar_T = {final:.3g} > {NEAR_PURE_NOISE:g}: x_T still "
                              f"carries the image, yet sampling starts from pure noise, so samples and the NLL's prior "
                              f"term suffer; use more diffusion.timesteps, larger betas or schedule=cosine", warning=True)

    def metric_columns(self) -> tuple[str, ...]:
        """metrics.csv's columns for this method: every run's, then the method's own logs, for a method with
        several optimizers one gradient norm per parameter group, and the scores of evaluation during training."""
        extra = [name for name in self.model.LOGS if name not in COLUMNS]
        scores = tuple(eval_metric_names(self.config.train.eval_metrics)) if self.config.train.eval_every else ()
        return (COLUMNS + tuple(extra) + tuple(name for name in self.grad_norm_columns.values() if name not in COLUMNS)
                + scores)


    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """RUN_DIR/checkpoints/step_XXXXXXX, written by rank 0 (None elsewhere); every process must call it."""
        rng = {generator_key(self.generator): self.generator.get_state(), "torch": torch.get_rng_state(),
               "order": self.order.cpu(), "position": torch.tensor(self.position),
               **distributed.gather_rng_states(self.device, self.processes)}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        self.saved_step = self.step
        if not self.processes.is_main:
            return None
        spec = stored_spec(self.model)
        metadata = {"config": json.dumps(asdict(self.config)), "method": self.config.method,
                    "model_spec": json.dumps(spec) if spec is not None else "",
                    "num_classes": str(self.num_classes or 0),
                    "class_names": json.dumps(self.train_data.class_names if self.num_classes else None)}
        optimizers = {group: optimizer.state_dict() for group, optimizer in self.optimizers.items()}
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model.state_dict(), self.ema.shadow.state_dict(),
                                    optimizers, rng, {"wall_s": self.wall_clock()}, metadata,
                                    self.config.train.keep_checkpoints)

    def load_checkpoint(self, folder: Path, new_guide: bool = False) -> None:
        """Restore the model, EMA, optimizers, generators and step of checkpoint `folder`; with `new_guide` (config
        guide_replaced) an LDM's guide, its optimizer and guide_ready keep this trainer's fresh ones."""
        progress = ckpt.read_progress(folder)
        model_state, _ = ckpt.read_weights(folder / ckpt.MODEL_FILE)
        ema_state, _ = ckpt.read_weights(folder / ckpt.EMA_FILE)
        if new_guide:
            model_state = with_fresh_guide(model_state, self.model.state_dict())
            ema_state = with_fresh_guide(ema_state, self.ema.shadow.state_dict())
        mismatch = ckpt.state_mismatch(self.model.state_dict(), model_state)
        if mismatch:
            raise UserError(f"{folder}: checkpoint does not fit this model: {mismatch}")
        optimizers = ckpt.read_tensors(folder / ckpt.OPTIMIZER_FILE)
        if "param_groups" in optimizers:  # a single optimizer stored unnamed (the DDPM checkpoints of version 0.1)
            optimizers = {"model": optimizers}
        if new_guide:  # a guide of its own, so this trainer has its "guide" group
            optimizers = {**optimizers, "guide": self.optimizers["guide"].state_dict()}
        if set(optimizers) != set(self.optimizers):
            raise UserError(f"{folder}: checkpoint has optimizer states for {', '.join(sorted(optimizers))}, this "
                            f"{self.config.method} model has parameter groups {', '.join(sorted(self.optimizers))}")
        try:
            self.model.load_state_dict(model_state)
            self.ema.shadow.load_state_dict(ema_state)
            for group, optimizer in self.optimizers.items():
                optimizer.load_state_dict(hotpath.with_kernel_choice(optimizer, optimizers[group]))
                hotpath.match_parameter_layouts(optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"{folder}: checkpoint does not fit this model ({str(exc).splitlines()[0][:150]})") from None
        rng = ckpt.read_tensors(folder / ckpt.RNG_FILE)
        self.step, self.wall_s = int(progress["step"]), float(progress.get("wall_s", 0.0))
        if generator_key(self.generator) in rng:
            self.generator.set_state(rng[generator_key(self.generator)])
        else:  # saved on another kind of device (train.device changed): a new stream, seeded by the step
            self.generator.manual_seed(self.config.train.seed + self.step)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.order, self.position = rng["order"].to(self.generator.device), int(rng["position"])
        self.saved_step = self.step
        distributed.restore_rng_state(rng, self.config.train.seed, self.step, self.device, self.processes)
