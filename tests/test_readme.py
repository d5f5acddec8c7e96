"""Every command line of README.md runs, and trains above chance.

The ```bash blocks of README.md are parsed into commands (``a && b`` gives
two). Each command is either

* run in a subprocess from the project root, shortened by the first rule of
  SHORTEN that fits it (fewer epochs, fewer images, one run of a benchmark),
  and checked: exit status 0, no chance-level warning, and where the rule
  names a floor, the accuracy it prints at or above that floor; or
* not run by design: pip installs and pytest itself, listed in SKIPPED with
  the reason, and the test below requires that set to be exactly what the
  README holds.

A command that no rule knows fails with a message saying what to add here, so
a new line in the README cannot go untested.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from mlp.train import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: commands not run by this file, keyed by their text as shlex.join spells it, with the reason
SKIPPED = {
    "pip install -e .": "installs mlp into the environment the tests already run in "
                        "(CI installs it the same way before running them)",
    "pip install -e '.[dev]'": "installs mlp with the test tools these tests are already "
                               "running under",
    "pytest -n auto": "runs the whole suite, this file included: it would run itself",
}
#: programs whose commands are never run here: each such command must be listed in SKIPPED
NOT_RUN = ("pip install", "pytest")


class Command(NamedTuple):
    """One command of a ```bash block: where it is, its text, its environment and argv."""
    line: int
    text: str
    env: dict
    argv: list

    @property
    def program(self):
        """'mlp.train' for python -m mlp.train, 'benchmarks/x.py', 'pip install', 'pytest', ..."""
        argv = self.argv
        if argv[:2] == ["python", "-m"] and len(argv) > 2:
            return argv[2]
        if argv[0] == "python" and len(argv) > 1:
            return argv[1]
        if argv[:2] == ["pip", "install"]:
            return "pip install"
        return argv[0]


class Rule(NamedTuple):
    """How to run the README commands of one program in a test (see SHORTEN)."""
    program: str
    when: str | None        # the rule applies only to commands with this argument (None: all)
    append: tuple = ()      # arguments added at the end: the last of a repeated option wins
    replace: tuple = ()     # (README text, replacement) pairs, for placeholders and paths
    floor: float | None = None   # least accuracy the output must show (None: no accuracy)
    accuracy: str = r"test accuracy:? (\d\.\d+)"   # where the accuracy is (last match counts)
    mnist: bool = True      # needs the MNIST files
    why: str = ""


# {shared}: a folder the module's tests share; {tmp}: the test's own folder; {mnist}: the
# MNIST folder; {run}: a trained run folder.
# One epoch on the first 5,000 MNIST images reaches 0.87 with the default recipe and with
# Nielsen's, 0.10 when stuck at chance: a floor of 0.5 separates the two.
SHORTEN = [
    # "Your own data": these run in README order and share {shared}, a folder of the module
    Rule("-c", "np.savez('digits.npz'", replace=(("digits.npz", "{shared}/digits.npz"),),
         mnist=False, why="writes the digits as an .npz, for the next two lines"),
    Rule("mlp.train", "digits.npz", replace=(("digits.npz", "{shared}/digits.npz"),
                                             ("runs/", "{shared}/runs/")),
         floor=0.8, mnist=False, why="seconds as written"),
    Rule("mlp.evaluate", "runs/digits-npz", replace=(("runs/", "{shared}/runs/"),),
         floor=0.8, mnist=False, why="the run of the line before"),
    Rule("-c", "np.savetxt('iris.csv'", replace=(("iris.csv", "{shared}/iris.csv"),), mnist=False,
         why="writes iris as a CSV, for the next line"),
    Rule("mlp.train", "iris.csv", replace=(("iris.csv", "{shared}/iris.csv"),
                                           ("runs/", "{shared}/runs/")),
         floor=0.8, mnist=False, why="seconds as written"),
    Rule("mlp.train", "--help", mnist=False, why="prints the options and exits"),
    Rule("mlp.train", "digits", ("--out", "{tmp}/run"), floor=0.8, mnist=False,
         why="digits trains in seconds: run as written"),
    Rule("mlp.train", None, ("--limit", "5000", "--epochs", "1", "--out", "{tmp}/run"),
         floor=0.5, why="one epoch on the first 5,000 MNIST images"),
    Rule("mlp.evaluate", None, replace=(("runs/<run>", "{run}"),), floor=0.5, mnist=False,
         why="evaluates a digits model trained by the fixture trained_run"),
    Rule("mlp.gradcheck", None, mnist=False, why="seconds as written"),
    Rule("-c", "five.npy",
         replace=(("runs/digits/five.npy", "{run}/five.npy"),), mnist=False,
         why="the README's five digits to predict, written into the fixture's digits run"),
    Rule("mlp.predict", None, replace=(("runs/digits/five.npy", "{run}/five.npy"),
                                       ("runs/digits", "{run}")), mnist=False,
         why="predicts the five digits with the fixture's digits run"),
    Rule("mlp.data", "download", ("--mirror", "http://127.0.0.1:9/"),
         replace=(("data/mnist", "{tmp}/mnist"),),
         why="into a folder that already holds the four files (links to the shared copy): "
             "verified and skipped; the unreachable mirror makes sure nothing is fetched"),
    Rule("mlp.data", "verify", replace=(("data/mnist", "{mnist}"),),
         why="checks the shared copy"),
    Rule("benchmarks/bench_speed.py", None,
         ("--runs", "1", "--batch-sizes", "1024", "--skip", "sklearn", "torch", "torch-raw",
          "--warmup", "0",
          "--max-seconds", "1", "--out", "{tmp}/speed.json"),
         why="one run at one batch size of mlp's two backends, epochs cut at 1 s"),
    Rule("benchmarks/bench_time_to_accuracy.py", None,
         ("--runs", "1", "--epochs", "1", "--batch-size", "500", "--target", "0.5",
          "--torch-epochs", "1", "--out", "{tmp}/tta.json"),
         floor=0.5, why="one epoch, to a target it reaches (PyTorch too, where installed), "
                        "in batches of 500: PyTorch's 1,042 steps of 48 took 20-80 s on a "
                        "loaded machine"),
    Rule("benchmarks/bench_memory.py", None,
         ("--out", "{tmp}/memory.json", "--", "--limit", "5000", "--epochs", "1"),
         floor=0.5, why="the measured run shortened like python -m mlp.train above"),
    Rule("benchmarks/bench_profile.py", None, ("--batch-sizes", "1024", "--out", "{tmp}/p.json"),
         why="one batch size"),
    Rule("benchmarks/bench_accuracy.py", None,
         ("--only", "nielsen1", "--epochs", "1", "--out", "{tmp}/accuracy.json"),
         replace=(("/path/to/mnist", "{mnist}"),), floor=0.5, accuracy=r"\btest (\d\.\d+)",
         why="Nielsen's ch. 1 row, one epoch"),
]

#: README commands known not to work, with why: a strict xfail, which fails once they work
#: again so that the entry is removed
BROKEN = {}


def bash_commands(markdown):
    """The commands of the ```bash blocks of ``markdown``, as :class:`Command` s.

    Comments are dropped, a line ending in a backslash continues on the next,
    ``a && b`` gives two commands, and leading ``NAME=value`` words are the
    command's environment.
    """
    commands, block, pending = [], None, ""
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            block = stripped[3:].strip() if block is None else None
            continue
        if block != "bash":
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words, pending = shlex.split(pending, comments=True), ""
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            part, words = words[:cut], words[cut + 1:]
            env = {}
            while part and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", part[0]):
                name, value = part.pop(0).split("=", 1)
                env[name] = value
            if part:
                commands.append(Command(number, shlex.join(part), env, part))
    return commands


COMMANDS = bash_commands(README.read_text(encoding="utf-8"))
RUN = [c for c in COMMANDS if c.program not in NOT_RUN]


def _in_script(text, command):
    """Whether ``text`` is part of the script of a ``python -c SCRIPT`` command."""
    return command.program == "-c" and len(command.argv) > 2 and text in command.argv[2]


def rule_for(command):
    """The first rule of SHORTEN for ``command``; LookupError saying what to add if none fits."""
    for rule in SHORTEN:
        if rule.program == command.program and (rule.when is None or rule.when in command.argv
                                                or _in_script(rule.when, command)):
            return rule
    raise LookupError(
        f"README.md line {command.line} runs `{command.text}`, and tests/test_readme.py has no "
        f"rule for {command.program!r}: add one to SHORTEN there (how to shorten the command "
        f"for a test, what accuracy its output must show), or, if it must not run in a test, "
        f"add it to SKIPPED with the reason.")


def shortened(command, rule, places):
    """(argv, environment) to run ``command`` by ``rule``; ``places`` fills in {tmp}, {mnist}..."""
    def fill(text):
        for old, new in rule.replace:
            text = text.replace(old, new.format(**places))
        return text

    argv = [fill(word) for word in command.argv] + [a.format(**places) for a in rule.append]
    if argv[0] == "python":
        argv[0] = sys.executable
    env = dict(os.environ, MPLBACKEND="Agg",
               **{name: fill(value) for name, value in command.env.items()})
    # this checkout's mlp, whether or not it is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if "mnist" in places:
        env.setdefault("MLP_DATA_DIR", str(places["mnist"]))
    return argv, env


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A saved run (digits, NumPy backend: no compiling) for the README's mlp.evaluate line."""
    out = tmp_path_factory.mktemp("readme") / "run"
    # one BLAS thread, restored afterwards: on a busy machine BLAS threads waiting for each
    # other made these tiny products 80 times slower
    with threadpool_limits(limits=1):
        assert main(["--dataset", "digits", "--epochs", "20", "--backend", "numpy",
                     "--out", str(out)]) == 0
    # what the README's python -c line writes, for its mlp.predict line (in whatever order
    # the two run)
    np.save(out / "five.npy", load_digits().data[:5])
    return out


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    """Where README lines that build on each other (write a file, train on it) keep their files."""
    return tmp_path_factory.mktemp("readme-shared")


def _id(command):
    return f"line{command.line}-{command.program}"


@pytest.mark.parametrize("command", RUN, ids=[_id(c) for c in RUN])
def test_readme_command_runs(command, request, tmp_path):
    try:
        rule = rule_for(command)
    except LookupError as e:
        pytest.fail(str(e))
    if command.program in BROKEN:
        request.applymarker(pytest.mark.xfail(reason=BROKEN[command.program], strict=True))
    places = {"tmp": tmp_path, "shared": request.getfixturevalue("shared_dir")}
    if rule.mnist:
        places["mnist"] = request.getfixturevalue("mnist_dir")
        (tmp_path / "mnist").mkdir()
        for f in Path(places["mnist"]).iterdir():
            (tmp_path / "mnist" / f.name).symlink_to(f)
    if "{run}" in str(rule.replace):
        places["run"] = request.getfixturevalue("trained_run")
    argv, env = shortened(command, rule, places)
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    said = f"README.md line {command.line}: `{command.text}`, run as {shlex.join(argv)}"
    output = r.stdout + r.stderr
    assert r.returncode == 0, f"{said}\nexit status {r.returncode}\n{output[-3000:]}"
    assert "at chance level" not in output, f"{said}\n{output[-3000:]}"
    if rule.floor is not None:
        found = re.findall(rule.accuracy, r.stdout)
        assert found, f"{said}\nno accuracy ({rule.accuracy}) in its output:\n{r.stdout[-3000:]}"
        assert float(found[-1]) >= rule.floor, (
            f"{said}\naccuracy {found[-1]} is below {rule.floor}: does the line train?\n"
            f"{r.stdout[-3000:]}")


def test_the_commands_not_run_are_exactly_the_expected_ones():
    """pip installs and pytest are not run; a new one in the README must be listed with why."""
    not_run = {c.text for c in COMMANDS if c.program in NOT_RUN}
    assert not_run == set(SKIPPED), (
        "README.md's commands that tests/test_readme.py does not run changed: list each in "
        "SKIPPED with the reason it is not run (or remove entries the README no longer has)")


def test_every_readme_command_is_run_or_skipped_by_design():
    """Collection found the README's commands, and each is either run or listed in SKIPPED."""
    assert len(RUN) >= 10                    # the parser found the blocks (14 commands today)
    assert {c.program for c in RUN} >= {"mlp.train", "mlp.evaluate", "mlp.gradcheck",
                                        "mlp.data"}
    for command in RUN:
        rule_for(command)                    # a LookupError names the command and what to add


def test_parsing_the_markdown():
    text = "\n".join([
        "prose `python -m mlp.nothing`",
        "```bash",
        "# a comment line",
        "pip install -e . && python -m mlp.train   # trailing comment",
        "X=/a/b python benchmarks/b.py --n 1 \\",
        "    --m 2",
        "```",
        "```python",
        "python -m mlp.not_bash",
        "```",
    ])
    got = bash_commands(text)
    assert [(c.line, c.text, c.env, c.program) for c in got] == [
        (4, "pip install -e .", {}, "pip install"),
        (4, "python -m mlp.train", {}, "mlp.train"),
        (6, "python benchmarks/b.py --n 1 --m 2", {"X": "/a/b"}, "benchmarks/b.py")]


def test_a_command_no_rule_knows_fails_saying_what_to_add():
    (command,) = bash_commands("```bash\npython -m mlp.nonesuch model.npz\n```\n")
    with pytest.raises(LookupError, match=r"line 2 runs `python -m mlp.nonesuch model.npz`.*"
                                          r"'mlp.nonesuch'.*add one to SHORTEN"):
        rule_for(command)


def test_shortening_appends_and_fills_in_places(tmp_path):
    (command,) = bash_commands("```bash\nMLP_DATA_DIR=/path/to/mnist python "
                               "benchmarks/bench_accuracy.py --threads 1\n```\n")
    argv, env = shortened(command, rule_for(command), {"tmp": tmp_path, "mnist": "/m"})
    assert argv == [sys.executable, "benchmarks/bench_accuracy.py", "--threads", "1", "--only",
                    "nielsen1", "--epochs", "1", "--out", f"{tmp_path}/accuracy.json"]
    assert env["MLP_DATA_DIR"] == "/m"
