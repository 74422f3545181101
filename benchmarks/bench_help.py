"""Benchmark of `--help` and `--version` latency (target: under 0.5 s each).

Each command runs as its console script does (common.entrypoints.run_command)
in a fresh interpreter, interleaved round by round with `python -c pass` so
that load on the machine hits both alike. Reported per command: the median
wall time, and its ratio to the bare interpreter's median.

    python benchmarks/bench_help.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

RUNNER = ("import sys; from common.entrypoints import run_command; "
          "sys.argv = sys.argv[1:]; run_command(sys.argv[0], sys.argv.pop(1))")
BASELINE = ("python -c pass", [sys.executable, "-c", "pass"])
COMMANDS = [
    ("convert --help", ["convert", "convert.cli", "--help"]),
    ("parity --help", ["parity", "parity.cli", "--help"]),
    ("parity check --help", ["parity", "parity.cli", "check", "--help"]),
    ("nanodet-unitv2 --help", ["nanodet-unitv2", "common.umbrella", "--help"]),
    ("convert --version", ["convert", "convert.cli", "--version"]),
]
TARGET_SECONDS = 0.5


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds per run, interleaved: each round runs the baseline and every command once."""
    runs = [BASELINE] + [(name, [sys.executable, "-c", RUNNER, *argv])
                         for name, argv in COMMANDS]
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(rounds):
        for name, argv in runs:
            times[name].append(wall_time(argv))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    medians = {name: statistics.median(t) for name, t in measure(rounds).items()}
    bare = medians[BASELINE[0]]
    print(f"{rounds} interleaved rounds, median wall time")
    for name, median in medians.items():
        verdict = "" if name == BASELINE[0] else \
            ("  ok" if median < TARGET_SECONDS else f"  OVER {TARGET_SECONDS} s")
        print(f"{name:24s} {median:6.3f} s  x{median / bare:4.1f}{verdict}")


if __name__ == "__main__":
    main()
