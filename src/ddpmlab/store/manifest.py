"""What ddpmlab wrote into a folder (a run directory, a folder of samples): FOLDER/ddpmlab-files.txt, one path per
line relative to the folder, appended before each file is written. `--force` removes what it lists and nothing else;
a folder without one holds nothing ddpmlab may remove."""

from __future__ import annotations

import os
import re
from pathlib import Path

MANIFEST_FILE = "ddpmlab-files.txt"
HEADER = "# the files ddpmlab wrote in this folder, one per line: --force removes these and nothing else\n"
# the temporary name of a write in progress (paths.temporary_sibling): .NAME.<8 hex>.tmp
TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")


def start_manifest(folder: Path) -> None:
    """Begin an empty list of `folder`'s files (created, or emptied after `--force` removed what it listed)."""
    with open(Path(folder) / MANIFEST_FILE, "w") as handle:
        handle.write(HEADER)


def recorded(folder: Path) -> set[str] | None:
    """The paths (relative, '/'-separated) the manifest of `folder` lists; None when it has none. A line a crash cut
    short (no line end) is not counted."""
    try:
        text = (Path(folder) / MANIFEST_FILE).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: `folder` is a file (a lone weights file)
        return None
    lines = text.split("\n")[:-1]  # the part after the last line end is unfinished
    return {line for line in lines if line and not line.startswith("#")}


def record_written(folder: Path, *paths: Path) -> None:
    """Add `paths` (files or folders inside `folder` that ddpmlab is about to write) to `folder`'s manifest. Nothing
    when `folder` has no manifest (a run of an older ddpmlab) or a path lies outside it (e.g. eval --out elsewhere)."""
    listed = recorded(folder)
    if listed is None:
        return
    root = os.path.abspath(folder)
    new = []
    for path in paths:
        relative = os.path.relpath(os.path.abspath(path), root)
        if relative != os.curdir and relative != os.pardir and not relative.startswith(os.pardir + os.sep):
            relative = Path(relative).as_posix()
            if relative not in listed and relative not in new:
                new.append(relative)
    if new:
        with open(Path(folder) / MANIFEST_FILE, "a") as handle:  # appends of a few lines: never interleaved
            handle.write("".join(f"{relative}\n" for relative in new))


def record_in_own_folder(folder: Path, *paths: Path) -> None:
    """Create `folder` (a folder of samples, a report) with its manifest when it has none, and list `paths` in it."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    if recorded(folder) is None:
        start_manifest(folder)
    record_written(folder, *paths)


def is_recorded(relative: str, listed: set[str]) -> bool:
    """Whether the entry at `relative` is one ddpmlab wrote: listed, or the temporary name of a write of one listed."""
    if relative in listed:
        return True
    parent, _, name = relative.rpartition("/")
    match = TEMPORARY.fullmatch(name)
    return match is not None and (f"{parent}/" if parent else "") + match["name"] in listed
