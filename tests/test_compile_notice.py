"""The message a first compile prints (mlp.compile_notice), on plain streams and on a terminal."""

import io
import time

import pytest
from numba import njit
from numba.core import event

from mlp import compile_notice


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def fresh(monkeypatch):
    """A process that has announced nothing yet."""
    monkeypatch.setitem(compile_notice._state, "announced", False)
    monkeypatch.setitem(compile_notice._state, "quiet", 0)


def test_announced_once_per_process(fresh):
    first, second = io.StringIO(), io.StringIO()
    with compile_notice.Ticker(first):
        pass
    with compile_notice.Ticker(second):
        pass
    assert first.getvalue() == compile_notice.MESSAGE + "\n"
    assert second.getvalue() == ""


def test_on_a_terminal_the_seconds_tick_until_done(fresh):
    tty = Terminal()
    with compile_notice.Ticker(tty):
        time.sleep(1.3)
    text = tty.getvalue()
    assert text.startswith(compile_notice.MESSAGE)
    assert "(1 s)" in text and text.endswith("done in 1 s\n")


def test_quiet_says_nothing(fresh):
    out = io.StringIO()
    with compile_notice.quiet(), compile_notice.Ticker(out):
        pass
    assert out.getvalue() == ""


def test_the_listener_announces_a_compile_of_its_module_only(fresh, capsys):
    listener = compile_notice.install_listener(__name__)
    try:
        @njit
        def twice(x):                     # not cached: compiles at its first call
            return 2 * x
        with compile_notice.quiet():
            assert twice(1) == 2          # compiled while quiet: nothing said
        assert compile_notice.MESSAGE not in capsys.readouterr().err

        @njit
        def thrice(x):
            return 3 * x
        thrice.py_func.__module__ = "somewhere.else"
        assert thrice(1) == 3             # another module's function: nothing said
        assert compile_notice.MESSAGE not in capsys.readouterr().err

        @njit
        def plus_one(x):
            return x + 1
        assert plus_one(1) == 2
        assert plus_one(1.5) == 2.5       # a second compile: not announced again
        assert capsys.readouterr().err.count(compile_notice.MESSAGE) == 1
        assert listener.depth == 0        # every start met its end
    finally:
        event.unregister("numba:compile", listener)
