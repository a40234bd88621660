"""Study tables in the report: read defensively, shown short, kept whole.

`read` loads one results/bench CSV and checks its required columns; a missing file or column is a
`TableProblem` whose one-line message the section prints instead of its content. `short` renders
the few columns that answer a study's question (a `Col` says which CSV column, its header with
unit, and its format); each cell carries the raw CSV value in `data-value`, so what is shown can
be checked against the CSV. `full` puts every column behind a <details> with the CSV as a
download (data URI), so nothing is lost and nothing runs off the page.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from diffscale.errors import DataError
from diffscale.report import fmt


class TableProblem(DataError):
    """A study table that is absent or lacks a required column: its section says so in one line."""

    def __init__(self, message: str, absent: bool = False):
        super().__init__(message)
        self.absent = absent


@dataclass(frozen=True)
class Col:
    name: str  # the CSV column, or a column the section computed
    label: str  # header, with its unit
    format: Callable[[Any], str] = fmt.sig
    title: str = ""  # hover text: what the column means
    optional: bool = field(default=False)  # left out when the column is absent or empty


def read(path: Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """The CSV at `path`; TableProblem when it is absent, empty or lacks a `required` column."""
    if not path.is_file():
        raise TableProblem(f"{path.name} not found", absent=True)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TableProblem(f"{path.name}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise TableProblem(f"{path.name} lacks the required column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)}")
    if frame.empty:
        raise TableProblem(f"{path.name} has no rows")
    return frame


def present(frame: pd.DataFrame, cols: Sequence[Col]) -> list[Col]:
    """The columns to show: every required one, optional ones only where the frame has values."""
    return [c for c in cols if not c.optional or (c.name in frame.columns and frame[c.name].notna().any())]


def _raw(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value)


def short(frame: pd.DataFrame, cols: Sequence[Col], table_id: str, caption: str = "") -> str:
    """The few columns that answer the question, formatted, each cell with its raw value."""
    shown = present(frame, cols)
    left = {c.name for c in shown if c.format is fmt.text}
    head = "".join(f'<th{_left(c, left)} title="{html.escape(c.title)}">{html.escape(c.label)}</th>' for c in shown)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in shown:
            value = row.get(c.name)
            cells.append(f'<td{_left(c, left)} data-col="{html.escape(c.name)}" data-value="{html.escape(_raw(value))}">'
                         f"{html.escape(c.format(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="short" id="{html.escape(table_id)}">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _left(col: Col, left: set[str]) -> str:
    return ' class="t"' if col.name in left else ""


def csv_link(frame: pd.DataFrame, filename: str) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    data = base64.b64encode(buffer.getvalue().encode()).decode()
    return (f'<a class="download" download="{html.escape(filename)}" '
            f'href="data:text/csv;base64,{data}">download {html.escape(filename)}</a>')


def full(frame: pd.DataFrame, filename: str, max_rows: int = 500) -> str:
    """Every column and row (up to `max_rows`), collapsed, with the whole CSV as a download."""
    shown = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    more = f'<p class="note">{len(frame) - max_rows} more rows in the CSV.</p>' if len(frame) > max_rows else ""
    return (f"<details class=\"full\"><summary>All {len(frame.columns)} columns of {html.escape(filename)} "
            f"({len(frame)} rows) · {csv_link(frame, filename)}</summary>"
            f'<div class="scroll"><table class="full"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            f"{more}</details>")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt.sig(value, 4)
    return fmt.text(value)
