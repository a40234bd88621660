"""What every CLI shares: a user mistake is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from diffscale.errors import UserError


def run_cli(main: Callable[[], int | None]) -> int:
    try:
        return int(main() or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def json_flag(flag: str, text: str):
    """The value of a flag that carries JSON (rules pass config slices this way), or a
    ConfigError naming the flag."""
    import json

    from diffscale.errors import ConfigError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag}: not valid JSON ({exc.msg})") from None
