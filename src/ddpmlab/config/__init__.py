"""Typed run configuration: dataclasses whose defaults follow Ho et al. (2020) (sections.py), YAML presets and
key=value overrides (files.py), and validation (validate.py), the one place that checks values.

A preset (src/ddpmlab/presets/NAME.yaml) overrides only what differs from these defaults; `key=value` overrides from
the command line go on top.
"""

from ddpmlab.config.files import (apply_overrides, config_from_dict, load_config, parse_overrides, parse_yaml,
                                  preset_description, preset_names, read_yaml_file, save_config, shown)
from ddpmlab.config.sections import (AE_LOSSES, BAD_IMAGE_POLICIES, BASELINE_SECTIONS, DATASETS, EVAL_METRICS,
                                     INT64_MAX, INT64_MIN, LOSS_WEIGHTINGS, LR_SCHEDULES, METHODS, PREDICTIONS,
                                     RECONSTRUCTIONS, RESUME_SAFE_KEYS, SCHEDULES, TOP_LEVEL_KEYS, Config, DataConfig,
                                     DCGANConfig, DiffusionConfig, LDMConfig, ModelConfig, SampleConfig, Switch,
                                     TrainConfig, VAEConfig, VAEGANConfig, config_to_dict, flatten)
from ddpmlab.config.validate import (check_baseline_section, check_ldm_section, eval_metric_names, guide_replaced,
                                     guide_stage_start, resume_changes, validate)

__all__ = [
    "apply_overrides", "config_from_dict", "load_config", "parse_overrides", "parse_yaml", "preset_description",
    "preset_names", "read_yaml_file", "save_config", "shown", "AE_LOSSES", "BAD_IMAGE_POLICIES", "BASELINE_SECTIONS",
    "DATASETS", "EVAL_METRICS", "INT64_MAX", "INT64_MIN", "LOSS_WEIGHTINGS", "LR_SCHEDULES", "METHODS", "PREDICTIONS",
    "RECONSTRUCTIONS", "RESUME_SAFE_KEYS", "SCHEDULES", "TOP_LEVEL_KEYS", "Config", "DataConfig", "DCGANConfig",
    "DiffusionConfig", "LDMConfig", "ModelConfig", "SampleConfig", "Switch", "TrainConfig", "VAEConfig", "VAEGANConfig",
    "config_to_dict", "flatten", "check_baseline_section", "check_ldm_section", "eval_metric_names", "resume_changes",
    "guide_replaced", "guide_stage_start", "validate",
]
