"""A sweep of samplers (quality against sampling cost): its SPEC, its points' names, and each point against the
longest DDPM chain. `ddpmlab.commands.sweep` runs one."""

from __future__ import annotations

from ddpmlab.errors import UserError
from ddpmlab.samplers import SAMPLERS, resolve_steps

SWEEP_EXAMPLE = "ddpm:1000,ddim:10,20,50,dpm-solver++:10,20,heun:10"


def parse_sweep(text: str, T: int) -> list[tuple[str, int]]:
    """'ddim:10,20,heun:9' -> [("ddim", 10), ("ddim", 20), ("heun", 9)]: a `sampler:` starts a group, bare numbers
    add step counts to the group before them. UserError names the bad token."""
    points, method = [], None
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if ":" in token:
            method, _, token = token.partition(":")
            method = method.strip()
            if method not in SAMPLERS:
                raise UserError(f"--sweep: unknown sampler {method!r}; samplers: {', '.join(SAMPLERS)}")
        if method is None:
            raise UserError(f"--sweep must start with a sampler, e.g. {SWEEP_EXAMPLE}")
        try:
            steps = int(token)
        except ValueError:
            raise UserError(f"--sweep: {token!r} is not a step count (e.g. {SWEEP_EXAMPLE})") from None
        points.append((method, resolve_steps(method, steps, T)))
    if not points:
        raise UserError(f"--sweep names no points, e.g. {SWEEP_EXAMPLE}")
    return list(dict.fromkeys(points))


def point_name(method: str, steps: int, spacing: str) -> str:
    """e.g. "dpm-solver++20-time-quadratic"."""
    return f"{method}{steps}-{spacing}"


def ddpm_reference(points: list[dict], metric: str) -> dict | None:
    """The level the fast samplers are measured against: the sweep's longest `ddpm` chain scored on `metric`."""
    ddpm = [p for p in points if p["sampler"] == "ddpm" and p["metrics"].get(metric) is not None]
    return max(ddpm, key=lambda p: p["nfe"]) if ddpm else None


def relative_change(value: float | None, reference: float) -> str:
    """(value − reference)/reference as a signed percentage, e.g. "+30.4 %"; "n/a" without a value or reference."""
    if value is None or reference == 0:
        return "n/a"
    return f"{100 * (value - reference) / reference:+.1f} %"


