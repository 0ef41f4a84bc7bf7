"""`hf:ORG/NAME[@REVISION]`: a diffusers DDPM model on the Hugging Face Hub, wherever a source is accepted.

Downloaded through huggingface_hub (the optional `hub` extra, imported only here, inside the function that needs it)
into its cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub): the JSON configs and the
safetensors weights of the two diffusers layouts, the .bin weights only where there are no safetensors. Offline
(HF_HUB_OFFLINE=1, or no connection) the cached snapshot is read. The folder returned is a diffusers DDPM folder,
read by ddpmlab.store.diffusers_format; nothing from the repository is executed.
"""

from __future__ import annotations

import re
from pathlib import Path

from ddpmlab.errors import UserError
from ddpmlab.store.diffusers_format import (PIPELINE_INDEX, SCHEDULER_CONFIG, UNET_CONFIG, WEIGHTS_FILES,
                                            diffusers_folders)

PREFIX = "hf:"
INSTALL = "pip install ddpmlab[hub]"
# the parts of a repository id: letters, digits, '-', '_', '.', not starting or ending with '-' or '.', no '--' or '..'
ID_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")  # a branch, tag or commit (refs/pr/1 included)
CONFIGS = (PIPELINE_INDEX, UNET_CONFIG, SCHEDULER_CONFIG, f"unet/{UNET_CONFIG}", f"scheduler/{SCHEDULER_CONFIG}")
SAFETENSORS, BIN = WEIGHTS_FILES  # the .bin only where a repository has no safetensors


def hub_source(source) -> tuple[str, str | None] | None:
    """(ORG/NAME, REVISION or None) of a source written `hf:ORG/NAME[@REVISION]`, None for any other source; UserError
    for a malformed one."""
    text = str(source)
    if not text.startswith(PREFIX):
        return None
    repo, _, revision = text[len(PREFIX):].partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(ID_PART.fullmatch(p) and "--" not in p and ".." not in p for p in parts):
        raise UserError(f"{text}: write a Hugging Face model as hf:ORG/NAME or hf:ORG/NAME@REVISION "
                        f"(e.g. hf:google/ddpm-cifar10-32)")
    if "@" in text and not (REVISION.fullmatch(revision) and ".." not in revision and not revision.endswith("/")):
        raise UserError(f"{text}: the revision after '@' must be a branch, tag or commit hash (e.g. @main)")
    return repo, revision or None


def hub_folder(source) -> Path:
    """The cached snapshot folder of `hf:ORG/NAME[@REVISION]`, downloaded first when online; UserError naming what to
    install without huggingface_hub, where to put the files when offline and not cached, and when the repository
    holds no diffusers DDPM model."""
    repo, revision = hub_source(source)
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise UserError(f"{source}: Hugging Face sources need huggingface_hub: {INSTALL}") from None
    cache = Path(getattr(constants, "HF_HUB_CACHE", None) or constants.HUGGINGFACE_HUB_CACHE)
    where = cache / f"models--{repo.replace('/', '--')}"
    folder = download(snapshot_download, source, where, revision, [*CONFIGS, SAFETENSORS, f"unet/{SAFETENSORS}"])
    if diffusers_folders(folder) is None:
        folder = download(snapshot_download, source, where, revision, [*CONFIGS, BIN, f"unet/{BIN}"])
    if diffusers_folders(folder) is None:
        raise UserError(f"{source}: the repository holds no diffusers DDPM model ({UNET_CONFIG} with {SAFETENSORS} "
                        f"or {BIN}, or {PIPELINE_INDEX} with unet/ and scheduler/)")
    return folder


def download(snapshot_download, source, cache: Path, revision: str | None, files: list[str]) -> Path:
    """snapshot_download of just `files` (the cached snapshot when offline), `cache` being the repository's folder in
    the Hugging Face cache; its errors as one-line UserErrors."""
    repo = hub_source(source)[0]
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=files))
    except FileNotFoundError:  # LocalEntryNotFoundError: offline (or unreachable) and not in the cache
        raise UserError(f"{source}: not in the Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE or no "
                        f"connection); run the command once on a machine with internet and copy {cache} over, or "
                        f"put the files in {cache}/snapshots/COMMIT/ with the commit in {cache}/refs/"
                        f"{revision or 'main'}") from None
    except (OSError, ValueError) as exc:  # repository or revision not found, gated, HTTP errors, invalid ids
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{source}: {type(exc).__name__}: {reason}") from None
