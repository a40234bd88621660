"""What every CLI shares: a user mistake is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from typing import Callable

from diffscale.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line too: "error: <message> (see <script> --help)", exit 2,
    not the usage block and the message on two more."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def argument_parser(doc: str | None) -> OneLineParser:
    """A script's argument parser: its module docstring as the description, kept as written."""
    return OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def run_cli(main: Callable[[], int | None]) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        return int(main() or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.filename is None or exc.errno not in UNWRITABLE:  # not a path the user gave: a bug, shown whole
            raise
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# What an output path the user gave can be wrong with: a file where a folder is wanted or the
# reverse, no permission, a read-only or full file system. Other OS errors keep their traceback.
UNWRITABLE = {errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC}


def os_error_text(exc: OSError) -> str:
    """'<path>: <reason>'; where a file stands in the way of a folder (mkdir of an existing file, a
    file written under one), that file is named as the problem."""
    from diffscale.atomic import file_in_the_way

    path = os_error_path(exc)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = file_in_the_way(path)
        if blocker is not None:
            writing = "" if str(blocker) == path else f" (for {path})"
            return f"{blocker}: is a file, where a folder is needed{writing}; give another path or move the file"
    return f"{path}: {exc.strerror or exc}"


def os_error_path(exc: OSError) -> str:
    """The path a file-system error is about, as the user named it: the target of a rename (an
    atomic writer's `os.replace(tmp, target)`), not the temporary file beside it."""
    from diffscale.atomic import target_of

    return target_of(str(exc.filename2 if exc.filename2 is not None else exc.filename))


def exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (what SLURM and Snakemake send to stop a job) leaves the way Ctrl-C does: through
    the atomic writers' clean-up, so no temporary or partial output is left; exit 143."""
    raise SystemExit(128 + signum)


def out_folder(what: str) -> str:
    """The --help text of an output folder written whole (diffscale.atomic.atomic_dir)."""
    return (f"{what} folder, written whole: it replaces an earlier {what} there, and refuses a folder "
            "that holds other files")


def positive_int(text: str) -> int:
    """argparse type of a count flag (--n, --threads, ...): argparse names the flag and exits 2."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def needs(by: str, given: dict) -> None:
    """A ConfigError when a flag that works only with others lacks some: "--config needs --hw and
    --gpus" (`given`: each other flag's value, None where it was not given)."""
    from diffscale.errors import ConfigError

    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise ConfigError(f"{by} needs {', '.join(missing[:-1]) + ' and ' if len(missing) > 1 else ''}{missing[-1]}")


def only_with(source: str, given: dict, instead: str) -> None:
    """A ConfigError when flags that go with `source` (--config) came with `instead` (--run-config),
    which already holds their values: "--hw and --gpus go with --config (a --run-config already says
    them)" (`given`: each such flag's value, None or [] where it was not given)."""
    from diffscale.errors import ConfigError

    extra = [flag for flag, value in given.items() if value not in (None, [])]
    if extra:
        joined = ", ".join(extra[:-1]) + " and " + extra[-1] if len(extra) > 1 else extra[0]
        raise ConfigError(f"{joined} go{'' if len(extra) > 1 else 'es'} with {source} (a {instead} already says "
                          f"{'them' if len(extra) > 1 else 'it'})")


def at_least_one(flag: str, value: int | None, what: str) -> None:
    """A ConfigError naming a count flag given below 1 (checked after parsing, so the one line comes
    from run_cli like every other mistake; None: not given)."""
    from diffscale.errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(f"{flag}: {value} is not a positive integer ({what})")


def fraction(text: str) -> float:
    """argparse type of a share flag (--people-fraction): a number from 0 to 1."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {value:g}")
    return value


def json_flag(flag: str, text: str):
    """The value of a flag that carries JSON (rules pass config slices this way), or a
    ConfigError naming the flag."""
    import json

    from diffscale.errors import ConfigError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag}: not valid JSON ({exc.msg})") from None
