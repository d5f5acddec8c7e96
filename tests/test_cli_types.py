"""The argparse types shared by the command-line tools."""

import argparse
import re

import pytest

from mlp.cli import (
    fraction,
    integer,
    nonnegative_float,
    number,
    positive_float,
    positive_int,
    proportion,
)


@pytest.mark.parametrize("parse, text, value", [
    (positive_int, "3", 3), (integer(0), "0", 0), (positive_float, "1e-3", 1e-3),
    (nonnegative_float, "0", 0.0), (fraction, "0.99", 0.99), (proportion, "1", 1.0),
    (number(above=-1, below=1), "-0.5", -0.5),
])
def test_accepts(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("parse, text, words", [
    (positive_int, "0", ">= 1"), (positive_int, "2.5", "not an integer"),
    (positive_float, "0", "> 0"), (positive_float, "inf", "finite"),
    (positive_float, "nan", "finite"), (nonnegative_float, "x", "not a number"),
    (fraction, "1", "in [0, 1)"), (proportion, "-0.1", "in [0, 1]"),
])
def test_rejects_with_a_reason(parse, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(words)):
        parse(text)
