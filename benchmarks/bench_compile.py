"""Where a cold compile's time and memory go: each child of mlp.precompile, each kernel.

Runs the children of a cold ``python -m mlp.train`` (``mlp.precompile.STEPS``:
the kernels ``train_chunk`` calls, ``train_chunk`` itself, prediction's)
one after another on an empty Numba cache, each in a fresh process that
listens to Numba's "numba:compile" event and records, for every function
it compiles, the CPU seconds spent in it (without the functions it
compiled meanwhile: "self") and the growth of the process's resident
memory. Prints, per child, its CPU seconds, its peak memory and the
kernels that took longest; writes everything to JSON.

CPU seconds rather than wall-clock seconds: on a shared machine the
children wait for cores (and may even be stopped for a while), which the
wall clock counts and the CPU clock does not. The sum over the children is
what a cold run spends compiling on one core.

Usage (from the project root)::

    python benchmarks/bench_compile.py [--optimizer adam] [--top 12] [--out FILE]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: what a child runs: the step of mlp.precompile under a "numba:compile" listener
CHILD = """
import json, resource, sys, time
from numba.core import event

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS"))

log, stack = [], []

class Record(event.Listener):
    def on_start(self, e):
        fn = e.data["dispatcher"].py_func
        stack.append([f"{fn.__module__}.{fn.__name__}", time.process_time(), rss_mb(), 0.0,
                      0.0])

    def on_end(self, e):
        name, t0, r0, nested_cpu, nested_mb = stack.pop()
        cpu, grown = time.process_time() - t0, rss_mb() - r0
        if stack:
            stack[-1][3] += cpu
            stack[-1][4] += grown
        log.append(dict(name=name, self_cpu=cpu - nested_cpu, cpu=cpu,
                        self_growth=grown - nested_mb, growth=grown))

event.register("numba:compile", Record())
from mlp import precompile
t0, r0 = time.process_time(), rss_mb()
precompile.prepare_step(precompile.make_spec(**json.loads(sys.argv[1])), sys.argv[2])
print(json.dumps(dict(cpu=time.process_time() - t0, rss_before=r0, log=log,
                      peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def run_step(spec, step, env):
    """One child: (its result, its wall-clock seconds, its CPU seconds including start-up)."""
    t0 = time.perf_counter()
    before = os.times()
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), step], env=env,
                          capture_output=True, text=True)
    after = os.times()
    if done.returncode != 0:
        sys.exit(f"error: the child of {step} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    total_cpu = (after.children_user + after.children_system
                 - before.children_user - before.children_system)
    return result, time.perf_counter() - t0, total_cpu


def by_kernel(log):
    """{short name: [compiles, self CPU s, self memory growth MB]} of a child's log, largest
    first ("self": without the functions compiled meanwhile)."""
    table = {}
    for entry in log:
        row = table.setdefault(entry["name"].split(".")[-1], [0, 0.0, 0.0])
        row[0] += 1
        row[1] += entry["self_cpu"]
        row[2] += entry["self_growth"]
    return dict(sorted(table.items(), key=lambda kv: -kv[1][1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 256, 10])
    p.add_argument("--optimizer", default="adam", help="the training kernel to compile")
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--top", type=int, default=12, help="kernels shown per child")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/compile-<time>.json)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from mlp import precompile  # this tree's mlp (the path just set): the children run it too
    spec = precompile.make_spec(args.sizes, optimizer=args.optimizer,
                                batch_size=args.batch_size)
    steps = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        for i, step in enumerate(precompile.STEPS):
            result, wall, cpu = run_step(spec, step, env)
            child = step if precompile.STEPS.count(step) == 1 else f"{step} ({i + 1})"
            steps[child] = dict(result, wall_seconds=wall, process_cpu_seconds=cpu,
                               kernels=by_kernel(result["log"]))
            print(f"{child}: {result['cpu']:.1f} CPU s compiling ({cpu:.1f} with start-up), "
                  f"{wall:.1f} s wall clock; peak {result['peak']:.0f} MB "
                  f"(from {result['rss_before']:.0f} MB)", flush=True)
            for name, (n, self_cpu, grown) in list(steps[child]["kernels"].items())[:args.top]:
                print(f"    {name:28s} x{n:<2d} {self_cpu:6.2f} CPU s  {grown:6.1f} MB")
    total = sum(s["process_cpu_seconds"] for s in steps.values())
    load = f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"all children: {total:.1f} CPU s (the issue's target: a 20 s cold compile){load}")
    result = {"benchmark": "bench_compile", "spec": spec, "steps": steps, "cpu_seconds": total,
              "machine": common.machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"written to {common.write_json(result, args.out, 'compile')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
