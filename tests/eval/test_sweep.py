"""A sweep's SPEC, its points' names, and each point against the longest DDPM chain (ddpmlab.eval.sweep)."""

import pytest

from ddpmlab.errors import UserError
from ddpmlab.eval.sweep import SWEEP_EXAMPLE, ddpm_reference, parse_sweep, point_name, relative_change
from ddpmlab.samplers import SAMPLERS


def test_a_sampler_starts_a_group_and_bare_numbers_add_to_it():
    assert parse_sweep("ddpm:100,ddim:2,5,heun:3", 100) == [("ddpm", 100), ("ddim", 2), ("ddim", 5), ("heun", 3)]
    assert parse_sweep(" ddim : 4 , 8 ,, dpm-solver++:8 ", 10) == [("ddim", 4), ("ddim", 8), ("dpm-solver++", 8)]


def test_repeated_points_are_kept_once_in_first_order():
    assert parse_sweep("ddim:5,2,5,heun:2,ddim:2", 10) == [("ddim", 5), ("ddim", 2), ("heun", 2)]


def test_the_example_in_every_message_parses_at_the_papers_T():
    points = parse_sweep(SWEEP_EXAMPLE, 1000)
    assert points[0] == ("ddpm", 1000) and len(points) == 7
    assert {name for name, _ in points} <= set(SAMPLERS)


@pytest.mark.parametrize("text, message", [
    ("10,ddim:5", "must start with a sampler"),
    ("euler:10", "unknown sampler 'euler'"),
    ("ddim:ten", "'ten' is not a step count"),
    ("ddim:0", r"ddim steps=0 must be an integer in 1\.\.50"),
    ("ddim:51", r"ddim steps=51 must be an integer in 1\.\.50"),
    (" , ", "names no points"),
])
def test_a_bad_spec_names_the_bad_token(text, message):
    with pytest.raises(UserError, match=message):
        parse_sweep(text, 50)


def test_point_names_are_sampler_steps_and_spacing():
    assert point_name("dpm-solver++", 20, "time-quadratic") == "dpm-solver++20-time-quadratic"
    assert point_name("ddpm", 1000, "linear") == "ddpm1000-linear"


def _point(sampler, nfe, fid):
    return {"sampler": sampler, "nfe": nfe, "metrics": {"fid_inception": fid}}


def test_the_reference_is_the_longest_scored_ddpm_chain():
    points = [_point("ddpm", 100, 9.0), _point("ddpm", 1000, 4.0), _point("ddim", 1000, 3.0),
              _point("ddpm", 2000, None)]
    assert ddpm_reference(points, "fid_inception") is points[1]
    assert ddpm_reference(points, "fd_classifier") is None
    assert ddpm_reference([_point("ddim", 50, 5.0)], "fid_inception") is None


def test_relative_change_is_a_signed_percentage_of_the_reference():
    assert relative_change(5.2, 4.0) == "+30.0 %"
    assert relative_change(3.0, 4.0) == "-25.0 %"
    assert relative_change(4.0, 4.0) == "+0.0 %"
    assert relative_change(None, 4.0) == "n/a" and relative_change(1.0, 0.0) == "n/a"
