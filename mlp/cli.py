"""Argument types shared by mlp's command-line tools (argparse ``type=`` callables).

Each turns the text of one flag into a value or raises
``argparse.ArgumentTypeError``, which argparse reports as a usage error
naming the flag (exit status 2, no traceback).
"""

import argparse
import math


def integer(minimum):
    """argparse type: an integer >= ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def number(above=None, minimum=None, below=None, maximum=None):
    """argparse type: a finite number within the given bounds (``above``/``below`` exclusive)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        low_ok = (above is None or value > above) and (minimum is None or value >= minimum)
        high_ok = (below is None or value < below) and (maximum is None or value <= maximum)
        if not (low_ok and high_ok):
            low = "" if above is None and minimum is None else (
                f"({above:g}" if above is not None else f"[{minimum:g}")
            high = "" if below is None and maximum is None else (
                f"{below:g})" if below is not None else f"{maximum:g}]")
            if low and high:
                rule = f"in {low}, {high}"
            elif low:
                rule = f"> {above:g}" if above is not None else f">= {minimum:g}"
            else:
                rule = f"< {below:g}" if below is not None else f"<= {maximum:g}"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


positive_int = integer(1)
nonnegative_int = integer(0)
positive_float = number(above=0.0)
nonnegative_float = number(minimum=0.0)
#: a momentum-like number in [0, 1)
fraction = number(minimum=0.0, below=1.0)
#: a share of something, in [0, 1]
proportion = number(minimum=0.0, maximum=1.0)
