"""The README's Python API examples are run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_examples_run(tmp_path, monkeypatch):
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "untrained.png").stat().st_size > 0


def test_readme_test_command_is_what_ci_runs():
    commands = re.findall(r"```bash\n(bash scripts/\S+)\n```", README.read_text())
    assert commands[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (README.parent / ".ci" / "run").read_text()


def torch_requirement() -> str:
    """The torch entry of pyproject.toml's dependencies, e.g. "torch>=2.14,<2.16"."""
    import tomllib

    dependencies = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in dependencies if re.match(r"torch\b(?!vision)", d))


def test_pyproject_states_a_tested_torch_range_that_holds_what_ci_runs_and_every_version_the_docs_name():
    import torch
    from packaging.requirements import Requirement
    from packaging.version import Version

    requirement = Requirement(torch_requirement())
    assert any(s.operator in ("<", "<=") for s in requirement.specifier)  # tested up to somewhere, not open-ended
    assert Version(torch.__version__).base_version in requirement.specifier  # what CI runs is inside it
    docs = README.read_text() + (README.parent / "BENCHMARKS.md").read_text()
    named = set(re.findall(r"(?:torch|PyTorch) (2\.\d+\.\d+)", docs))
    assert named and all(version in requirement.specifier for version in named), named
    bounds = [s.version for s in requirement.specifier]
    setup = README.read_text().split("## Set up", 1)[0]
    assert all(bound in setup for bound in bounds), f"the README's requirement line should state {requirement}"
    assert "CPU build" not in docs  # every build this project ran on was a CUDA one (+cu130, +cu132)
