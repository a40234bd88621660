"""Atomic writes: a crash never leaves a file that looks finished.

Everything is written to `<name>.tmp` beside the target and then `os.replace`d, which is atomic
on POSIX file systems (and on the shared file systems SLURM clusters use). Before the rename,
the output gets the permissions the user's umask grants a newly created file: some writers
(safetensors, `tempfile`) create theirs readable by the owner only, which would hide a shared
study's shards, caches and weights from the rest of a lab.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from diffscale.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


def share(path: str | os.PathLike) -> None:
    """Widen the permissions of `path` (and of everything under it, for a folder) to at least what
    the umask grants a new file or folder; never narrows them."""
    path = Path(path)
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        if entry.is_symlink():
            continue
        mode = entry.stat().st_mode & 0o7777
        wanted = mode | (DIR_MODE if entry.is_dir() else FILE_MODE)
        if wanted != mode:
            entry.chmod(wanted)


def temporary(target: Path, suffix: str = ".tmp") -> Path:
    """The temporary name `target` is written under: hidden, beside it, this process's; `suffix`
    for a writer that picks the format by the name's extension (Chromium's screenshot)."""
    return target.with_name(f".{target.name}.{os.getpid()}{suffix}")


def target_of(path: str) -> str:
    """The path a temporary name of `temporary` stands for (an error message names that, the path
    the user gave); any other path unchanged."""
    parent, slash, name = path.rpartition("/")
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == "" and parts[-1] == "tmp" and parts[-2].isdigit():
        return f"{parent}{slash}{'.'.join(parts[1:-2])}"
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`); on success rename it onto `path`,
    else delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(target, suffix)
    try:
        yield tmp
        share(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The file at `path`, or where one of the folders above it should be; None when there is none."""
    target = Path(path)
    return next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), None)


def check_folder_path(path: str | os.PathLike) -> Path:
    """`path` as an output folder, checked before any work: a DataError when a file is there, or
    where one of the folders above it should be."""
    target = Path(path)
    blocker = file_in_the_way(target)
    if blocker == target:
        raise DataError(f"{target}: a file is there; the output is a folder")
    if blocker is not None:
        raise DataError(f"{blocker}: a file is there, where the output folder {target} needs a folder")
    return target


def check_replaceable(path: str | os.PathLike, marker: str) -> Path:
    """`path` as a folder `atomic_dir` may write: absent, empty, or an earlier output of the same
    kind, which holds `marker` (a name every such output has). Anything else is refused, before any
    work: a file there, or a folder of other files (the script's input, a home folder), which
    replacing it would delete."""
    target = check_folder_path(path)
    if target.is_dir() and any(target.iterdir()) and not (target / marker).exists():
        raise DataError(f"{target}: a folder of other files (without {marker}, so not an earlier output of this "
                        f"kind), which the output would replace; give a new or empty folder")
    return target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` (an earlier
    output there, checked by `check_replaceable`, is removed first), else it is deleted: a folder of
    outputs appears whole or not."""
    import shutil

    target = check_replaceable(path, marker)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        yield tmp
        check_replaceable(target, marker)  # what appeared there while the folder was written
        if target.is_dir():
            shutil.rmtree(target)


@contextlib.contextmanager
def all_or_none(paths) -> Iterator[None]:
    """Around a step that writes several outputs one after another (each atomically): when it
    fails or is interrupted, those of `paths` that exist are removed, so no partial or mixed set
    (some new, some from an earlier run) is left behind."""
    try:
        yield
    except BaseException:
        for path in map(Path, paths):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
