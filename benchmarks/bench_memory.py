"""Peak memory (maximum resident set size) of a default ``python -m mlp.train`` run.

Runs ``python -m mlp.train --out <temporary folder>`` (plus any extra
arguments) in a child process and reads its peak resident memory from
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` once it has finished: the
largest peak of that process and of any process it started (on a cold Numba
cache, the one that compiles the kernels). Since a run's processes can
overlap, it also samples, every 20 ms, the memory they use together: the
sum of their proportional set sizes (PSS: a page shared by k processes counts
1/k in each). For comparison it measures a child that only imports what
training imports (Python, NumPy, Numba, matplotlib, mlp): the floor below
which no run can go.

Usage (from the project root)::

    python benchmarks/bench_memory.py [--limit-mb 400] [--out FILE] [-- extra mlp.train arguments]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IMPORTS = ("import numpy, numba, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot; "
           "import mlp.train, mlp.numba_backend, mlp.kernels, mlp.data, mlp.plots")


def _descendants(pid):
    """pid's children, their children, and so on (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                found += kids
                todo += kids
        except OSError:           # the process has just ended
            pass
    return found


def _pss_kb(pid):
    """Proportional set size of process pid in kB (0 if it has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_peak_mb(cmd):
    """Run ``cmd`` to completion; return (peak RSS, peak total PSS, seconds, return code, output).

    The peaks are in MB; the total PSS is None where it was not measured.

    ru_maxrss of RUSAGE_CHILDREN is the largest peak of any waited-for
    descendant so far, so each measurement runs in a fresh intermediate
    process (the probe). The total PSS of the probe's descendants is sampled
    meanwhile (None where /proc gives no PSS).
    """
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.call(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
             "time.perf_counter() - t, rc)")
    proc = subprocess.Popen([sys.executable, "-c", probe, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: setattr(proc, "result", proc.communicate()))
    reader.start()
    pss, sampled = 0, os.path.exists(f"/proc/{os.getpid()}/smaps_rollup")
    while reader.is_alive() and sampled:
        pss = max(pss, sum(_pss_kb(p) for p in _descendants(proc.pid)))
        time.sleep(0.02)
    reader.join()
    pss = pss or None             # no /proc PSS, or no process found: not measured
    stdout, stderr = proc.result
    if proc.returncode != 0:
        sys.exit(f"error: the probe failed:\n{stderr}")
    lines = stdout.strip().splitlines()
    kb, seconds, rc = lines[-1].split()
    return (int(kb) / 1024, None if pss is None else pss / 1024, float(seconds), int(rc),
            "\n".join(lines[:-1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit-mb", type=float, default=400.0, help="the target to compare with")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/memory-<time>.json)")
    p.add_argument("extra", nargs="*", help="extra arguments for python -m mlp.train (after --)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mlp.train", "--out", str(Path(tmp) / "run"), *args.extra]
        print("running:", " ".join(cmd), flush=True)
        peak, total, seconds, rc, output = child_peak_mb(cmd)
        print(output)
    floor, _, _, _, _ = child_peak_mb([sys.executable, "-c", IMPORTS])
    worst = max(peak, total or 0)
    compiled = re.search(r"\(\+ ([0-9.]+)s compiling\)", output)     # what mlp.train printed
    compile_seconds = float(compiled.group(1)) if compiled else None
    print(f"\npeak resident memory of the training run: {peak:.0f} MB (largest of its processes)")
    if total is not None:
        print(f"peak memory of its processes together: {total:.0f} MB "
              f"(total PSS, sampled every 20 ms)")
    print(f"target < {args.limit_mb:.0f} MB: {'met' if worst < args.limit_mb else 'NOT met'}; "
          f"exit status {rc}, {seconds:.1f} s wall clock")
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    if compile_seconds is not None:         # the target for a cold run: ≤ 20 s
        print(f"compiling, as mlp.train reported it: {compile_seconds:.1f} s{load}")
    print(f"imports alone (Python, NumPy, Numba, matplotlib, mlp): {floor:.0f} MB")
    result = {"benchmark": "bench_memory", "command": " ".join(cmd), "peak_mb": peak,
              "peak_total_pss_mb": total, "imports_only_mb": floor, "limit_mb": args.limit_mb,
              "exit_status": rc, "wall_seconds": seconds, "compile_seconds": compile_seconds,
              "machine": common.machine(),
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"written to {common.write_json(result, args.out, 'memory')}")
    return 0 if rc == 0 and worst < args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
