"""Peak memory (maximum resident set size) of a default ``python -m mlp.train`` run.

Runs ``python -m mlp.train --out <temporary folder>`` (plus any extra
arguments) in a child process and reads its peak resident memory from
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` once it has finished. For
comparison it also measures a child that only imports what training imports
(Python, NumPy, Numba, matplotlib, mlp): the floor below which no run can go.

Usage (from the project root)::

    python benchmarks/bench_memory.py [--limit-mb 400] [--out FILE] [-- extra mlp.train arguments]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IMPORTS = ("import numpy, numba, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot; "
           "import mlp.train, mlp.numba_backend, mlp.kernels, mlp.data, mlp.plots")


def child_peak_mb(cmd):
    """Run ``cmd`` to completion; return (peak RSS of that child in MB, seconds, return code).

    ru_maxrss of RUSAGE_CHILDREN is the largest peak of any waited-for child
    so far, so each measurement runs in a fresh intermediate process.
    """
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.call(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
             "time.perf_counter() - t, rc)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: the probe failed:\n{out.stderr}")
    lines = out.stdout.strip().splitlines()
    kb, seconds, rc = lines[-1].split()
    return int(kb) / 1024, float(seconds), int(rc), "\n".join(lines[:-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit-mb", type=float, default=400.0, help="the target to compare with")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/memory-<time>.json)")
    p.add_argument("extra", nargs="*", help="extra arguments for python -m mlp.train (after --)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mlp.train", "--out", str(Path(tmp) / "run"), *args.extra]
        print("running:", " ".join(cmd), flush=True)
        peak, seconds, rc, output = child_peak_mb(cmd)
        print(output)
    floor, _, _, _ = child_peak_mb([sys.executable, "-c", IMPORTS])
    print(f"\npeak resident memory of the training run: {peak:.0f} MB "
          f"(target < {args.limit_mb:.0f} MB: {'met' if peak < args.limit_mb else 'NOT met'}); "
          f"exit status {rc}, {seconds:.1f} s wall clock")
    print(f"imports alone (Python, NumPy, Numba, matplotlib, mlp): {floor:.0f} MB")
    result = {"benchmark": "bench_memory", "command": " ".join(cmd), "peak_mb": peak,
              "imports_only_mb": floor, "limit_mb": args.limit_mb, "exit_status": rc,
              "wall_seconds": seconds, "machine": common.machine(),
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"written to {common.write_json(result, args.out, 'memory')}")
    return 0 if rc == 0 and peak < args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
