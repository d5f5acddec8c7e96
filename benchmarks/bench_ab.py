"""A/B of two source trees of mlp: seconds per MNIST epoch of mlp-numba, interleaved, one run.

For a change that must not cost speed (a refactoring, a tidy-up), time the
tree before it and the tree after it side by side on the same machine at
the same time: each epoch is bench_speed.py's mlp-numba measurement, run
in a fresh child process that imports mlp from one tree (``PYTHONPATH``):
it loads the kernels (from that tree's Numba cache: compiling is not
timed), trains a throwaway network for ``--warmup`` seconds and then times
one epoch of 784-100-10 (or ``--sizes``) sigmoid, plain SGD at 0.1, on all
of Numba's threads (or ``--threads``). The trees alternate, ``--runs``
epochs each per batch size, so a busy moment of the machine hits both; the
median is reported with the ratio new/old. With ``--cpu`` the process's CPU
seconds are compared instead of the wall clock's: on a machine that other
programs keep busy they are much steadier (with one thread, a fair measure
of the work done; with more, spinning threads count too).

Usage (from the project root; make the old tree with ``git worktree add``)::

    git worktree add /tmp/old HEAD~3
    python benchmarks/bench_ab.py /tmp/old . [--runs 5] [--batch-sizes 10 32 128 1024]
                                  [--sizes 784 100 10] [--threads N] [--cpu]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

#: the measurement of each epoch: bench_speed.py's worker, with the benchmarks of this tree
SPEED = Path(__file__).resolve().parent / "bench_speed.py"


def epoch_seconds(tree, batch, warmup, sizes="784,100,10", threads=0, cpu=False):
    """One timed epoch with mlp imported from ``tree``, in a child process.

    Wall-clock seconds, or with ``cpu`` the process's CPU seconds.
    """
    env = dict(os.environ, PYTHONPATH=str(tree))
    # worker arguments: framework, layer sizes, batch size, seed, threads (0: Numba's default),
    # budget, warmup
    cmd = [sys.executable, str(SPEED), "--worker", "mlp-numba", sizes, str(batch), "0",
           str(threads), "inf", str(warmup)]
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{tree}: the epoch failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["cpu_seconds"] if cpu else result["seconds"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, help="the tree before the change")
    p.add_argument("new", type=Path, help="the tree after the change")
    p.add_argument("--runs", type=int, default=5, help="epochs per tree and batch size")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 32, 128, 1024])
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of untimed training")
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 100, 10],
                   help="layer widths, input to output (as bench_speed.py)")
    p.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    p.add_argument("--cpu", action="store_true",
                   help="compare CPU seconds (all threads) instead of wall-clock seconds: "
                        "steadier on a busy machine, blind to time spent waiting")
    args = p.parse_args(argv)
    sizes = ",".join(map(str, args.sizes))
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    print(f"old: {trees['old']}\nnew: {trees['new']}")
    for batch in args.batch_sizes:
        seconds = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                seconds[name].append(epoch_seconds(tree, batch, args.warmup, sizes, args.threads,
                                                   args.cpu))
        old, new = (statistics.median(seconds[k]) for k in ("old", "new"))
        spread = {k: f"{min(v):.3f}–{max(v):.3f}" for k, v in seconds.items()}
        print(f"batch {batch:5d}: old {old:.3f} s ({spread['old']}), new {new:.3f} s "
              f"({spread['new']}), new/old {new / old:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
