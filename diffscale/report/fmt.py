"""Numbers as a reader wants them: a few significant digits, the unit once (in the column header
or beside the number), nothing for a value that is not there.

Every formatter takes a raw value (float, int, str, None, NaN) and returns text; a missing value
is an en dash. Tests parse these strings back, so each format is a number followed by at most a
unit-like suffix (×, %, s) or preceded by $.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def number(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, NaN or not a number."""
    if value is None or isinstance(value, bool):
        return float(value) if isinstance(value, bool) else None
    try:
        found = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(found) else found


def as_int(value: Any, default: int = 0) -> int:
    """`value` as an int (a CSV cell read as float or text), or `default` when it is missing."""
    v = number(value)
    return default if v is None else int(v)


def sig(value: Any, digits: int = 3) -> str:
    """`digits` significant digits, no exponent for everyday magnitudes, thousands separated."""
    v = number(value)
    if v is None:
        return MISSING
    if v == 0:
        return "0"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    magnitude = math.floor(math.log10(abs(v)))
    if magnitude < digits - 1:  # round first, so 99.96 reads "100", not "100.0"
        v = _round_sig(v, digits)
        magnitude = math.floor(math.log10(abs(v)))
    if magnitude >= digits - 1:
        return f"{round(v):,}"
    if magnitude < -4:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits - 1 - magnitude}f}"


def _round_sig(v: float, digits: int) -> float:
    """`v` rounded to `digits` significant digits (finite, non-zero `v`)."""
    return float(f"{v:.{digits - 1}e}")


def integer(value: Any) -> str:
    v = number(value)
    return MISSING if v is None else f"{round(v):,}"


def seconds(value: Any) -> str:
    return sig(value, 3)


def duration(value: Any) -> str:
    """A span of seconds in the unit a reader thinks in: '42.0 s', '7.5 min', '6.8 h'."""
    v = number(value)
    if v is None:
        return MISSING
    if abs(v) >= 3600:
        return f"{sig(v / 3600)} h"
    return f"{sig(v / 60)} min" if abs(v) >= 60 else f"{sig(v)} s"


def ratio(value: Any) -> str:
    """A speed-up: 6.1×."""
    v = number(value)
    return MISSING if v is None else f"{sig(v, 2 if abs(v) < 10 else 3)}×"


def percent(value: Any) -> str:
    """A fraction as a percentage: 0.76 → 76 %."""
    v = number(value)
    return MISSING if v is None else f"{sig(100 * v, 2 if abs(v) < 1 else 3)} %"


def money(value: Any) -> str:
    """US dollars, two significant digits below $10, three from $10, never an exponent: $0.000016,
    $0.12, $1.2, $12.3, $1,234."""
    v = number(value)
    if v is None:
        return MISSING
    if 0 < abs(v) < 1e-4:  # two significant digits written out: 9.996e-05 → $0.00010
        v = _round_sig(v, 2)
        return f"${v:.{1 - math.floor(math.log10(abs(v)))}f}"
    return f"${sig(v, 2 if v < 10 else 3)}"


def text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value)


def yes_no(value: Any) -> str:
    if isinstance(value, str):
        return value
    v = number(value)
    return MISSING if v is None else ("yes" if v else "no")


def span(low: Any, high: Any, format=None) -> str:
    """'low–high', or one value where both read the same or one end is missing."""
    format = format or sig
    a, b = format(low), format(high)
    if a == MISSING:
        return b
    return a if b in (a, MISSING) else f"{a}–{b}"


def serial_fraction(value: Any) -> str:
    """A Karp–Flatt serial fraction; above 1 (a slowdown: more than all of the work serial) it
    measures nothing, and reads as missing."""
    v = number(value)
    return MISSING if v is None or v > 1 else sig(v, 2)
