"""Reading and writing configs: presets and YAML files, key=value overrides, each value checked against its type."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from ddpmlab.config.sections import INT64_MAX, INT64_MIN, TOP_LEVEL_KEYS, Config, config_to_dict
from ddpmlab.config.validate import validate
from ddpmlab.errors import UserError
from ddpmlab.paths import atomic_write_bytes


def preset_names() -> list[str]:
    """Names of the presets shipped in the package, sorted."""
    folder = resources.files("ddpmlab") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The first comment line of a shipped preset, e.g. "Seconds on a CPU: synthetic shapes, ..."."""
    text = (resources.files("ddpmlab") / "presets" / f"{name}.yaml").read_text()
    first = next((line for line in text.splitlines() if line.startswith("#")), "")
    return first.lstrip("# ").strip()


def parse_yaml(text: str | bytes, source: str) -> Any:
    """The plain data (mappings, lists, strings, numbers, booleans, null) of a YAML document, read with the safe
    loader only: a tag that would build a Python object (`!!python/object/apply:...`) is refused, never run.
    UserError naming `source` for anything that is not UTF-8 YAML."""
    try:
        return yaml.safe_load(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: e.g. 2020-13-45
        raise UserError(f"{source}: not valid YAML ({exc.__class__.__name__}); a config or suite holds plain "
                        f"mappings, lists, strings and numbers") from None


def read_yaml_file(path: str | Path, source: str | None = None) -> Any:
    """`parse_yaml` of the file at `path`; UserError when it is missing or unreadable."""
    path, source = Path(path), source or str(path)
    try:
        return parse_yaml(path.read_bytes(), source)
    except FileNotFoundError:
        raise UserError(f"file not found: {source}") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror or exc})") from None


def _read_yaml(source: str) -> dict:
    """The mapping in a preset name or a YAML path."""
    path = Path(source)
    if source in preset_names():
        data = parse_yaml((resources.files("ddpmlab") / "presets" / f"{source}.yaml").read_text(), source)
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"config file not found: {source}")
        data = read_yaml_file(path, source)
    else:
        raise UserError(f"unknown preset {source!r}; presets: {', '.join(preset_names())} (or give a YAML path)")
    if not isinstance(data, dict):
        raise UserError(f"{source}: a config must be a mapping of sections, got {shown(data)}")
    return data


def shown(value: Any) -> str:
    """`value`'s repr cut short (a hostile YAML can nest aliases into a structure whose full repr never ends)."""
    return _SHORT_REPR.repr(value)


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 4


# YAML 1.1 reads "1e-3" and "2E-4" (no dot) as strings; every number a user writes is accepted as a number
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _as_number(value: Any) -> Any:
    """`value` as an int or float when it is a numeric string ("1e-3", "2E-4", "1e2", "10"), else unchanged."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        try:
            return int(value) if re.fullmatch(r"[-+]?\d+", value.strip()) else float(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return value
    return value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a dataclass field's type, converting where YAML is looser (int -> float, "1e-3")."""
    origin, args = get_origin(annotation), get_args(annotation)
    if value is None:
        if type(None) in args:
            return None
        raise UserError(f"{key} must not be null")
    if args and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    if origin is Literal:  # a Switch: exactly one of its values (1 is not true)
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise UserError(f"{key} must be one of {', '.join(_literal_text(a) for a in args)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{key}[]") for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} must be true or false, got {shown(value)}")
    if annotation in (int, float):
        value = _as_number(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key} must be a finite number, got {shown(value)}")
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:  # every integer setting ends up in a torch int64 or a C long
                raise UserError(f"{key} must be an integer in -2**63..2**63-1, got {shown(value)}")
            return value
        raise UserError(f"{key} must be an integer, got {shown(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond float's range
                raise UserError(f"{key} must be a finite number, got {shown(value)}") from None
        raise UserError(f"{key} must be a number, got {shown(value)}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key} must be a string, got {shown(value)}")
    return value


def _literal_text(choice: Any) -> str:
    """A Literal's value as a user writes it in YAML: true, false, auto."""
    return str(choice).lower() if isinstance(choice, bool) else str(choice)


def _merge(config: Config, data: dict, source: str) -> None:
    """Apply a {section: {key: value}, top-level key: value} mapping onto `config`, naming any unknown key."""
    sections = sorted(f.name for f in dataclasses.fields(Config) if f.name not in TOP_LEVEL_KEYS)
    top_level = get_type_hints(Config)
    for section_name, values in data.items():
        if section_name in TOP_LEVEL_KEYS:
            setattr(config, section_name, _coerce(values, top_level[section_name], section_name))
            continue
        if section_name not in sections:
            raise UserError(f"{source}: unknown config section {shown(section_name)}; sections: {', '.join(sections)}; "
                            f"top-level keys: {', '.join(TOP_LEVEL_KEYS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {section_name!r} must be a mapping")
        section = getattr(config, section_name)
        hints = get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                name = key if isinstance(key, str) else shown(key)
                raise UserError(f"{source}: unknown key {section_name}.{name}; keys: {', '.join(sorted(hints))}")
            setattr(section, key, _coerce(value, hints[key], f"{section_name}.{key}"))


def parse_overrides(overrides: list[str]) -> dict:
    """['train.steps=10', 'model.channel_mult=[1,2]', 'method=vae'] -> {'train': {'steps': 10}, 'model': {...},
    'method': 'vae'}; values are YAML."""
    data: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or (key.count(".") != 1 and key not in TOP_LEVEL_KEYS):
            raise UserError(f"override {item!r} must look like section.key=value, e.g. train.steps=1000 "
                            f"(or method=NAME)")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except (yaml.YAMLError, ValueError, RecursionError):  # not YAML (or a date like 2020-13-45): the text itself
            value = raw
        if key in TOP_LEVEL_KEYS:
            data[key] = value
        else:
            section, name = key.split(".")
            data.setdefault(section, {})[name] = value
    return data


def config_from_dict(data: dict, source: str = "config") -> Config:
    """A validated Config from a {section: {key: value}} mapping over the defaults."""
    config = Config()
    _merge(config, data, source)
    validate(config)
    return config


def load_config(source: str, overrides: list[str] | None = None) -> Config:
    """Read a preset name or YAML path, apply `key=value` overrides, validate; raises UserError."""
    config = Config()
    _merge(config, _read_yaml(source), source)
    _merge(config, parse_overrides(overrides or []), "override")
    validate(config)
    return config


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """A copy of `config` with `key=value` overrides applied and validated."""
    copy = config_from_dict(config_to_dict(config))
    _merge(copy, parse_overrides(overrides), "override")
    validate(copy)
    return copy


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    atomic_write_bytes(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())
