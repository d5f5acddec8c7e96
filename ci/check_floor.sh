#!/usr/bin/env bash
# Dependency floor check: install the project in a fresh venv with the OLDEST versions
# pyproject.toml declares (every "name>=X" in [project] dependencies pinned to "name==X"),
# then run the tests that depend most on those versions (Numba kernels and internals,
# the precompiled cache, scikit-learn's estimator API).
#
#   bash ci/check_floor.sh            # uses `python`
#   PYTHON=python3.12 bash ci/check_floor.sh
#
# Exits non-zero if the install or any test fails. The venv and the Numba cache live in
# one temporary folder, removed on exit. Needs Python >= 3.10 and bash >= 4.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mlp-floor.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The pins come from pyproject.toml itself, so this check cannot drift from what is declared.
# Every runtime dependency must be a plain "name>=version": anything else is an error here.
PINS="$("$PY" - <<'EOF'
import re, sys
try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10: pip carries the same parser
    from pip._vendor import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9.]*)\s*", dep)
    if m is None:
        sys.exit(f"check_floor: cannot pin {dep!r}: expected 'name>=version'")
    print(f"{m[1]}=={m[2]}")
EOF
)"
mapfile -t PIN_ARGS <<< "$PINS"
echo "check_floor: pins from pyproject.toml: ${PIN_ARGS[*]}"

start=$SECONDS
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# One resolve: the project (editable, as .ci/run installs it) with every declared minimum
# pinned exactly, plus the test tools (their newest versions: they are not runtime deps).
"$VPY" -m pip install --quiet --disable-pip-version-check -e . "${PIN_ARGS[@]}" pytest pytest-xdist hypothesis
echo "check_floor: venv and install took $((SECONDS - start)) s"

# What was tested; importing mlp.plots, matplotlib.pyplot, tqdm and scipy.stats here also
# covers the floor of the libraries the test files below do not touch.
VERSIONS="$(MPLBACKEND=Agg "$VPY" - <<'EOF'
import platform
from importlib.metadata import version
import llvmlite.binding
import matplotlib.pyplot, scipy.stats, tqdm  # noqa: F401
import mlp.estimators, mlp.plots            # noqa: F401
names = ["numpy", "numba", "llvmlite", "scikit-learn", "scipy", "threadpoolctl",
         "matplotlib", "tqdm", "joblib", "pytest", "pytest-xdist", "hypothesis"]
llvm = ".".join(map(str, llvmlite.binding.llvm_version_info))
print(f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)
      + f" (LLVM {llvm})")
EOF
)"
echo "check_floor: testing with $VERSIONS"

# Compile for this machine's CPU, as users do: NUMBA_CPU_NAME=generic would hide
# host-specific code generation (Numba 0.58-0.60 aborted compiling the AVX-512 gather).
unset NUMBA_CPU_NAME NUMBA_CPU_FEATURES PYTHONPATH
export NUMBA_CACHE_DIR="$WORK/numba-cache"
export MPLBACKEND=Agg
status=0
start=$SECONDS
"$VPY" -m pytest -n auto -q -p no:cacheprovider \
    tests/test_kernels.py tests/test_precompile.py tests/test_network.py \
    tests/test_estimators.py tests/test_numba_backend.py || status=$?
echo "check_floor: tests took $((SECONDS - start)) s"
if [ "$status" -eq 0 ]; then
    echo "check_floor: PASSED with the declared floor: $VERSIONS"
else
    echo "check_floor: FAILED (pytest exit $status) with the declared floor: $VERSIONS"
fi
exit "$status"
