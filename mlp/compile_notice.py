"""Telling the user that Numba is compiling: one line before, a ticking clock on a terminal.

The first use of the Numba kernels on a machine (or after an upgrade of mlp,
Numba or Python) compiles them, which takes about a minute on two cores and
prints nothing by itself: users took it for a hang. So whoever compiles says
so once per process, on stderr — :mod:`mlp.precompile` around its child
processes, and, for everything else that compiles in-process (the
estimators, ``mlp.gradcheck --backend numba``, ``mlp.demos``), a listener on
Numba's "numba:compile" event that :mod:`mlp.numba_backend` installs. On a
terminal a clock ticks on the same line until the compiling ends.

This module imports nothing from mlp, and Numba only inside
:func:`install_listener`, so that :mod:`mlp.precompile` can use it before
this process imports Numba.
"""

import sys
import threading
import time

#: printed once per process before the kernels compile
MESSAGE = ("mlp: compiling the Numba kernels for this machine, once: about a minute on 2 "
           "cores; Numba caches them on disk for later runs")

_state = {"announced": False, "quiet": 0}


class Ticker:
    """A context that announces compiling (once per process) and, on a TTY, shows the seconds.

    ``stream``: where to write (default: sys.stderr at entry). Nested or
    repeated uses in one process print the message only the first time.
    """

    def __init__(self, stream=None):
        self.stream = stream
        self._stop = threading.Event()
        self._thread = None
        self._t0 = 0.0

    def __enter__(self):
        self.stream = self.stream or sys.stderr
        self._t0 = time.monotonic()
        if _state["quiet"] or _state["announced"]:
            return self
        _state["announced"] = True
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.stream.write(MESSAGE + ("" if tty else "\n"))
        self.stream.flush()
        if tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self):
        while not self._stop.wait(1.0):
            self.stream.write(f"\r{MESSAGE} ({time.monotonic() - self._t0:.0f} s)")
            self.stream.flush()

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write(f"\r{MESSAGE}: done in {time.monotonic() - self._t0:.0f} s\n")
            self.stream.flush()
        return False


class quiet:
    """A context in which nothing is announced (e.g. while a compile may still be refused)."""

    def __enter__(self):
        _state["quiet"] += 1
        return self

    def __exit__(self, *exc):
        _state["quiet"] -= 1
        return False


def install_listener(module):
    """Announce (with :class:`Ticker`) any compiling of a Numba function of ``module``.

    Listens to Numba's "numba:compile" event for the life of the process;
    nested compiles (a kernel compiling the kernels it calls) count as one.
    """
    from numba.core import event  # Numba's internals: imported only by those that use Numba

    class Announce(event.Listener):
        depth = 0
        ticker = None

        def on_start(self, e):
            if e.data["dispatcher"].py_func.__module__ != module or _state["quiet"]:
                return
            if self.depth == 0:
                self.ticker = Ticker()
                self.ticker.__enter__()
            self.depth += 1

        def on_end(self, e):
            if e.data["dispatcher"].py_func.__module__ != module or self.depth == 0:
                return
            self.depth -= 1
            if self.depth == 0:
                self.ticker.__exit__(None, None, None)
    listener = Announce()
    event.register("numba:compile", listener)
    return listener
