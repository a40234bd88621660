"""Reading the JSON and CSV files that stages leave behind, with one error for each way it fails.

Part of the ground layer. A missing file or one that does not parse is a `DataError` whose one
line names the file and what is wrong, so a CLI can print it and exit 2:

    record = io.read_json(run_dir / "run.json", missing="missing; the run did not finish")
    rows = io.read_csv(run_dir / "metrics.csv")            # list of dicts, values as strings
    frame = io.read_frame(run_dir / "metrics.csv")         # the same as a pandas DataFrame

Writing is `diffscale.atomic`'s job.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from diffscale.errors import DataError

MISSING = "missing"


def read_json(path: str | Path, missing: str = MISSING) -> Any:
    """The parsed JSON of `path`; DataError `"{path}: {missing}"` or `"{path}: not valid JSON (...)"`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg})") from None


def read_csv(path: str | Path, missing: str = MISSING) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def read_frame(path: str | Path, missing: str = MISSING):
    """A CSV file as a pandas DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {missing}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV file ({first})") from None
