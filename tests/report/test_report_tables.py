"""The report's study tables (diffscale.report.tables): what a missing or malformed CSV says, which
columns are shown, and that the shown, raw and downloadable values agree."""

from __future__ import annotations

import base64
import html
import io
import math
import re

import pandas as pd
import pytest

from diffscale.report import fmt
from diffscale.report.tables import Col, TableProblem, full, present, read, short


def problem(path, required=()) -> TableProblem:
    with pytest.raises(TableProblem) as caught:
        read(path, required)
    return caught.value


def test_an_absent_table_is_marked_absent_and_named(tmp_path):
    error = problem(tmp_path / "train_unet.csv")
    assert str(error) == "train_unet.csv not found" and error.absent


def test_a_folder_where_the_table_should_be_is_no_table(tmp_path):
    (tmp_path / "train_unet.csv").mkdir()
    error = problem(tmp_path / "train_unet.csv")
    assert str(error) == "train_unet.csv not found" and error.absent


def test_a_table_without_its_required_columns_names_them(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    error = problem(path, ["a", "c", "d"])
    assert str(error) == "t.csv lacks the required columns c, d" and not error.absent
    assert str(problem(path, ["c"])) == "t.csv lacks the required column c"


@pytest.mark.parametrize("content,message", [(b"", "t.csv: not a readable CSV (No columns to parse from file)"),
                                             (b"a,b\n", "t.csv has no rows"),
                                             (b"a\n\xff\xfe\n", "t.csv: not a readable CSV ("),
                                             (b'a,b\n"1,2\n', "t.csv: not a readable CSV (")])
def test_an_unreadable_or_empty_table_is_a_one_line_problem(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    error = problem(path, ["a"] if content else ())
    assert str(error).startswith(message) and "\n" not in str(error) and not error.absent


def test_a_readable_table_comes_back_whole(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n2,\n")
    frame = read(path, ["a"])
    assert frame["a"].tolist() == [1, 2] and frame["b"].iloc[0] == "x" and pd.isna(frame["b"].iloc[1])


FRAME = pd.DataFrame({"backend": ["serial", "dask"], "speedup": [1.0, 3.456], "note": [math.nan, math.nan],
                      "cluster": [math.nan, "slurm"]})
COLS = [Col("backend", "backend", fmt.text, title="how the work is split"), Col("speedup", "speed-up", fmt.ratio),
        Col("note", "note", fmt.text, optional=True), Col("cluster", "cluster", fmt.text, optional=True),
        Col("absent", "absent", optional=True)]


def test_an_optional_column_is_shown_only_where_it_has_a_value():
    assert [c.name for c in present(FRAME, COLS)] == ["backend", "speedup", "cluster"]
    assert [c.name for c in present(FRAME, [Col("absent", "x")])] == ["absent"]  # a required one always


def cells(markup: str) -> list[list[tuple[str, str, str, str]]]:
    """Each row's cells as (class, data-col, data-value, text)."""
    rows = re.findall(r"<tr>(.*?)</tr>", markup.split("<tbody>")[1])
    cell = re.compile(r'<td( class="t")? data-col="([^"]*)" data-value="([^"]*)">(.*?)</td>')
    return [[(c.strip(), col, html.unescape(raw), html.unescape(text)) for c, col, raw, text in cell.findall(r)]
            for r in rows]


def test_a_short_table_shows_formatted_values_beside_the_raw_ones():
    markup = short(FRAME, COLS, "embed-scaling", caption="Speed-up <against> 1 CPU")
    assert markup.startswith('<table class="short" id="embed-scaling"><caption>Speed-up &lt;against&gt; 1 CPU</caption>')
    assert re.findall(r"<th(?: [^>]*)?>(.*?)</th>", markup) == ["backend", "speed-up", "cluster"]
    assert '<th class="t" title="how the work is split">backend</th>' in markup
    assert cells(markup) == [
        [('class="t"', "backend", "serial", "serial"), ("", "speedup", "1.0", "1.0×"),
         ('class="t"', "cluster", "", fmt.MISSING)],
        [('class="t"', "backend", "dask", "dask"), ("", "speedup", "3.456", "3.5×"),
         ('class="t"', "cluster", "slurm", "slurm")]]


def test_a_short_table_without_a_caption_has_none_and_a_missing_required_column_reads_as_missing():
    markup = short(FRAME, [Col("backend", "backend", fmt.text), Col("workers", "workers")], "t")
    assert "<caption>" not in markup
    assert [row[1] for row in cells(markup)] == [("", "workers", "", fmt.MISSING)] * 2


def downloaded(markup: str) -> pd.DataFrame:
    data = re.search(r'href="data:text/csv;base64,([^"]+)"', markup).group(1)
    return pd.read_csv(io.StringIO(base64.b64decode(data).decode()))


def test_the_full_table_has_every_column_and_the_whole_csv_as_a_download():
    frame = pd.DataFrame({"a": [1.23456, 2.0, 3.0], "b": ["x", None, "z"]})
    markup = full(frame, "t.csv")
    assert "All 2 columns of t.csv (3 rows)" in markup and "more rows" not in markup
    assert re.findall(r"<td>(.*?)</td>", markup) == ["1.235", "x", "2.000", fmt.MISSING, "3.000", "z"]
    pd.testing.assert_frame_equal(downloaded(markup), frame)


def test_a_long_table_shows_its_first_rows_and_says_how_many_more_the_csv_has():
    frame = pd.DataFrame({"a": range(7)})
    markup = full(frame, "t.csv", max_rows=5)
    assert "(7 rows)" in markup and '<p class="note">2 more rows in the CSV.</p>' in markup
    assert re.findall(r"<td>(.*?)</td>", markup) == ["0", "1", "2", "3", "4"]
    assert downloaded(markup)["a"].tolist() == list(range(7))
    assert "more rows" not in full(frame, "t.csv", max_rows=7)
