"""Learning-rate schedules of ``python -m mlp.train``: the rate of every step, one function each.

A schedule gives the factor by which step t (0-based, counted over the whole
run) multiplies the base rate η; T is the run's number of steps (epochs ×
batches per epoch) and E the batches per epoch::

    constant    1
    linear      1 − t/T                       (η at the first step, η/T at the last)
    cosine      ½ (1 + cos(π t/T))            (η at the first step, near 0 at the last)
    step        γ^⌊t / (E · every)⌋           (× γ every ``every`` epochs)

With a floor F > 0 (``--lr-floor``) the factor f of the schedule becomes
F + (1 − F)·f, falling from 1 to F instead of 0; and with F held over the
last ``flat`` steps (the epochs of ``--average-epochs``: the constant rate of
stochastic weight averaging, Izmailov et al. 2018), the schedule runs over
the T − flat steps before them, and every later step's factor is F.

The rate is computed here, in Python and float64, for every step, and
handed to the backends as numbers (:meth:`Schedule.rates`): both backends
then use the same rates, and a resumed run (which counts its steps on from
the checkpoint) the same as an uninterrupted one. The estimators'
``invscaling`` and ``adaptive`` are scikit-learn's rules, in
:mod:`mlp.estimator_training`.
"""

import math

import numpy as np


def constant(t, total, per_epoch, every, gamma):
    return 1.0


def linear(t, total, per_epoch, every, gamma):
    return 1.0 - t / total


def cosine(t, total, per_epoch, every, gamma):
    return 0.5 * (1.0 + math.cos(math.pi * t / total))


def step(t, total, per_epoch, every, gamma):
    return gamma ** (t // (per_epoch * every))


#: the schedules by name: factor(t, total, per_epoch, every, gamma)
SCHEDULES = {"constant": constant, "linear": linear, "cosine": cosine, "step": step}


class Schedule:
    """A named schedule over a run of ``total`` steps, ``per_epoch`` of them an epoch.

    ``every`` and ``gamma`` are the "step" schedule's: × gamma every ``every``
    epochs; ``floor`` and ``flat`` as the module says. The steps past ``total``
    (a run resumed with more epochs) keep the last step's factor.
    """

    def __init__(self, name="constant", total=1, per_epoch=1, every=1, gamma=0.1,
                 floor=0.0, flat=0):
        if name not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {name!r}: choose one of "
                             f"{', '.join(SCHEDULES)}")
        if int(total) < 1 or int(per_epoch) < 1 or int(every) < 1:
            raise ValueError(f"a schedule needs total, per_epoch and every >= 1, got "
                             f"{total}, {per_epoch}, {every}")
        if not 0 < gamma <= 1:
            raise ValueError(f"the step schedule's gamma must be in (0, 1], got {gamma!r}")
        if not 0 <= floor < 1 or not 0 <= int(flat) < int(total):
            raise ValueError(f"a schedule's floor must be in [0, 1) and its flat steps in "
                             f"[0, total), got floor {floor!r}, {flat} flat of {total}")
        self.name, self.total, self.per_epoch = name, int(total), int(per_epoch)
        self.every, self.gamma = int(every), float(gamma)
        self.floor, self.flat = float(floor), int(flat)

    def factor(self, t):
        """The factor of step t (0-based)."""
        t = min(int(t), self.total - 1)
        falling = self.total - self.flat
        if t >= falling:
            return self.floor
        f = SCHEDULES[self.name](t, falling, self.per_epoch, self.every, self.gamma)
        return self.floor + (1.0 - self.floor) * f if self.floor else f

    def rates(self, lr, t0, n):
        """η · factor(t) for the n steps t0 … t0+n−1, as float64."""
        return np.array([lr * self.factor(t) for t in range(t0, t0 + n)], dtype=np.float64)

    def config(self):
        """The schedule as plain data (the keyword arguments of its constructor)."""
        return {"name": self.name, "total": self.total, "per_epoch": self.per_epoch,
                "every": self.every, "gamma": self.gamma, "floor": self.floor, "flat": self.flat}
