"""Reading the JSON and CSV files that stages leave behind, with one error for each way it fails.

Part of the ground layer. A missing file or one that does not parse is a `DataError` whose one
line names the file and what is wrong, so a CLI can print it and exit 2:

    record = io.read_json(run_dir / "run.json", missing="missing; the run did not finish")  # provenance.read_record
    rows = io.read_csv(run_dir / "metrics.csv")            # list of dicts, values as strings
    frame = io.read_frame(run_dir / "metrics.csv")         # the same as a pandas DataFrame

Writing is `diffscale.atomic`'s job.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

from diffscale.errors import DataError

MISSING = "missing"


def read_json(path: str | Path, missing: str = MISSING, what: str = "JSON") -> Any:
    """The parsed JSON of `path`, else a DataError: "{path}: {missing}", "{path}: not valid JSON
    ({message} at line L column C)", "... (not UTF-8 text)", "{path}: expected the {what} file, found
    a folder", "{path}: cannot read the {what} file ({reason})"."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected the {what} file, found a folder") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} file ({exc.strerror})") from None


def read_text(path: str | Path, missing: str = MISSING, what: str = "text") -> str:
    """The UTF-8 text of `path`, else a DataError naming the file: "{path}: {missing}", "{path}:
    expected the {what} file, found a folder", "{path}: not UTF-8 text (expected the {what} file)",
    "{path}: cannot read the {what} file ({reason})"."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected the {what} file, found a folder") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected the {what} file)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} file ({exc.strerror})") from None


def check_columns(path: str | Path, present, required) -> None:
    """A DataError naming the file and the first of `required` its header lacks."""
    have = set(present)
    lacking = [column for column in required if column not in have]
    if lacking:
        raise DataError(f"{path}: missing column {lacking[0]!r} (expected {', '.join(required)})")


def read_csv(path: str | Path, missing: str = MISSING, required=()) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings; `required`: columns it must have."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CSV file ({exc.strerror})") from None
    check_columns(path, reader.fieldnames or [], required)
    return rows


def read_frame(path: str | Path, missing: str = MISSING, required=()):
    """A CSV file as a pandas DataFrame; `required`: columns it must have."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {missing}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV file ({first})") from None
    check_columns(path, frame.columns, required)
    return frame


@contextlib.contextmanager
def image_file(path: str | Path, missing: str = MISSING):
    """The image file opened with PIL, for the block to check and decode: a DataError naming the file
    when it is missing, not an image, or corrupt past its header (found while the block decodes)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except UnidentifiedImageError:  # its message repeats the path
        raise DataError(f"{path}: not a readable image (corrupt, or not an image file)") from None
    except (OSError, SyntaxError) as exc:
        # past the header PIL raises OSError (a truncated file) or SyntaxError (broken PNG chunks)
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: not a readable image ({reason})") from None


def read_image(path: str | Path, missing: str = MISSING):
    """An image file as RGB (decoded in full), or a DataError naming the file (`image_file`)."""
    with image_file(path, missing) as image:
        return image.convert("RGB")


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """`rows` as CSV text with a header of `columns` (extra keys dropped, None written empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()
