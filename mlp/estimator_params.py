"""The estimators' parameters: storing them as scikit-learn requires, and checking their values.

A parameter check takes the value and returns what the value must be if it
is invalid, else something false; :meth:`mlp.estimators._BaseMLP._check_params`
turns that into "{name} must be {what}, got {value!r}".
"""

import numbers

import numpy as np


def _store_params(est, args):
    """Store every parameter of ``__init__`` unchanged (``args``: its ``locals()``), as
    scikit-learn requires of an ``__init__``; ``get_params`` reads them back."""
    for name in est._get_param_names():
        setattr(est, name, args[name])


def _hidden_sizes(sizes):
    """``hidden_layer_sizes`` as a list of ints (an int means one hidden layer); None if invalid."""
    if isinstance(sizes, numbers.Integral):
        sizes = (sizes,)
    try:
        sizes = list(sizes)
    except TypeError:
        return None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
               for s in sizes):
        return None
    return [int(s) for s in sizes]


def _one_of(choices, what=None):
    return lambda v: v not in choices and (what or f"one of {', '.join(choices)}")


def _integer(low):
    return lambda v: ((not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low)
                      and f"an integer >= {low}")


def _real(low, high=np.inf, low_open=False):
    bounds = f"{'>' if low_open else '>='} {low}" + (
        f" and < {high}" if np.isfinite(high) else "")
    return lambda v: ((not isinstance(v, numbers.Real) or isinstance(v, bool)
                       or not np.isfinite(v) or v < low or (low_open and v == low) or v >= high)
                      and f"a number {bounds}")
