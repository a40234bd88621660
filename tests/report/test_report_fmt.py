"""The report's number formats (diffscale.report.fmt): significant digits, units, missing values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffscale.report import fmt


@pytest.mark.parametrize("value,text", [(0.123456, "0.123"), (1234.5, "1,234"), (12.345, "12.3"), (None, "–"),
                                        (math.nan, "–"), (0, "0"), ("2.5", "2.50"), ("n/a", "–"), (True, "1.00"),
                                        (100, "100"), (999.4, "999"), (-0.5, "-0.500"), (0.00012345, "0.000123"),
                                        (0.0000123, "1.23e-05"), (math.inf, "∞"), (-math.inf, "−∞")])
def test_sig(value, text):
    assert fmt.sig(value) == text


@pytest.mark.parametrize("value,text", [(99.96, "100"), (9.996, "10.0"), (0.99996, "1.00"), (-9.996, "-10.0"),
                                        (0.000099996, "0.000100")])
def test_a_value_that_rounds_up_to_the_next_power_of_ten_keeps_its_significant_digits(value, text):
    assert fmt.sig(value) == text


def test_sig_takes_the_digits_asked():
    assert fmt.sig(0.123456, 2) == "0.12" and fmt.sig(12.345, 4) == "12.35" and fmt.sig(123.4, 2) == "123"
    assert fmt.sig(1234.4, 4) == "1,234"


@pytest.mark.parametrize("seconds,text", [(42.0, "42.0 s"), (59.9, "59.9 s"), (60.0, "1.00 min"), (450, "7.50 min"),
                                          (3599, "60.0 min"), (3600, "1.00 h"), (24480, "6.80 h"), (-90, "-1.50 min"),
                                          (-7200, "-2.00 h"), (None, "–")])
def test_a_duration_reads_in_the_unit_a_reader_thinks_in(seconds, text):
    assert fmt.duration(seconds) == text


def test_units():
    assert fmt.ratio(6.14) == "6.1×" and fmt.percent(0.764) == "76 %" and fmt.money(0.1234) == "$0.12"
    assert fmt.money(0.001234) == "$0.0012" and fmt.money(12.345) == "$12.3"
    assert fmt.money(0.0000163) == "$0.000016"


def test_ten_times_or_more_and_a_hundred_percent_or_more_take_three_digits():
    assert fmt.ratio(9.94) == "9.9×" and fmt.ratio(10) == "10.0×" and fmt.ratio(12.34) == "12.3×"
    assert fmt.ratio(-12.34) == "-12.3×"
    assert fmt.percent(0.9934) == "99 %" and fmt.percent(1.234) == "123 %"
    assert fmt.money(9.94) == "$9.9" and fmt.money(10) == "$10.0" and fmt.money(123.4) == "$123"
    assert fmt.money(1234.4) == "$1,234"


def test_a_tiny_price_is_written_out_with_two_significant_digits_never_an_exponent():
    assert fmt.money(0.000099996) == "$0.00010" and fmt.money(0.00001) == "$0.000010"
    assert fmt.money(0.0001) == "$0.00010" and fmt.money(0) == "$0" and fmt.money(-0.0000163) == "$-0.000016"


@pytest.mark.parametrize("formatter", [fmt.integer, fmt.seconds, fmt.duration, fmt.ratio, fmt.percent, fmt.money,
                                       fmt.serial_fraction])
@pytest.mark.parametrize("missing", [None, math.nan, "", "x"])
def test_a_missing_value_is_an_en_dash_in_every_format(formatter, missing):
    assert formatter(missing) == fmt.MISSING == "–"


def test_number_reads_cells_as_a_csv_gives_them():
    assert fmt.number("3") == 3.0 and fmt.number(np.float32(0.5)) == 0.5 and fmt.number(np.int64(7)) == 7.0
    assert fmt.number(False) == 0.0 and fmt.number(True) == 1.0
    assert fmt.number(None) is None and fmt.number(math.nan) is None and fmt.number([1]) is None


def test_as_int_falls_back_to_its_default_only_for_a_missing_value():
    assert fmt.as_int("4.0") == 4 and fmt.as_int(0.0, default=9) == 0
    assert fmt.as_int(None) == 0 and fmt.as_int(math.nan, default=-1) == -1


def test_integer_rounds_and_separates_thousands():
    assert fmt.integer(1234567.6) == "1,234,568" and fmt.integer("12") == "12"


def test_text_and_yes_no():
    assert fmt.text(None) == fmt.MISSING and fmt.text(math.nan) == fmt.MISSING and fmt.text(3) == "3"
    assert fmt.text("a") == "a"
    assert fmt.yes_no(1) == "yes" and fmt.yes_no(0.0) == "no" and fmt.yes_no(True) == "yes"
    assert fmt.yes_no("partly") == "partly" and fmt.yes_no(None) == fmt.MISSING and fmt.yes_no(math.nan) == fmt.MISSING


def test_a_range_whose_ends_read_the_same_is_one_value():
    assert fmt.span(10.61, 10.64) == "10.6" and fmt.span(10.6, 12.3) == "10.6–12.3"
    assert fmt.span(0.5, 0.9, fmt.percent) == "50 %–90 %" and fmt.span(None, None) == fmt.MISSING
    assert fmt.span(None, 2) == "2.00" and fmt.span(2, math.nan) == "2.00"


def test_a_slowdown_has_no_serial_fraction():
    assert fmt.serial_fraction(0.123) == "0.12" and fmt.serial_fraction(1.0) == "1.0"
    assert fmt.serial_fraction(1.9) == fmt.MISSING and fmt.serial_fraction(-0.05) == "-0.050"
