"""`ddpmlab presets` and `ddpmlab config`: the shipped presets, and a resolved config."""

from __future__ import annotations

import yaml

from ddpmlab.config import config_to_dict, load_config, preset_description, preset_names


def presets(args) -> int:
    names = preset_names()
    width = max(map(len, names))
    print("\n".join(f"{name:<{width}}  {preset_description(name)}" for name in names))
    return 0


def show(args) -> int:
    print(yaml.safe_dump(config_to_dict(load_config(args.config, args.overrides)), sort_keys=False), end="")
    return 0
