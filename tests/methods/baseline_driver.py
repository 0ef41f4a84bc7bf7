"""The caller's side of the baselines' interface: the optimizer loop the trainer will run, for the tests."""

import torch


def run_iteration(net, x0, generator, optimizers, frozen=()):
    """The caller's loop for one training iteration; phases of a `frozen` group are computed but not stepped.

    Returns every phase's logs as floats, keyed by name, plus "<group>_phase_loss" for each phase's loss.
    """
    logs = {}
    for phase in net.training_phases(x0, generator):
        if phase.group not in frozen:
            optimizers[phase.group].zero_grad(set_to_none=True)
            phase.loss.backward()
            optimizers[phase.group].step()
        logs[f"{phase.group}_phase_loss"] = phase.loss.item()
        logs.update({name: value.item() for name, value in phase.logs.items()})
    return logs


def adam_per_group(net, lr=None):
    """One Adam per parameter group with the method's recommended learning rate and betas."""
    return {group: torch.optim.Adam(params, lr=lr if lr is not None else net.DEFAULT_LR, betas=net.DEFAULT_BETAS)
            for group, params in net.parameter_groups().items()}


def train(net, x0, steps, seed=0, frozen=(), lr=None):
    """`steps` iterations on the fixed batch x0; returns the list of per-iteration log dicts."""
    generator = torch.Generator().manual_seed(seed)
    optimizers = adam_per_group(net, lr)
    net.train()
    return [run_iteration(net, x0, generator, optimizers, frozen) for _ in range(steps)]

