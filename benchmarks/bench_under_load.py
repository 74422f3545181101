"""Benchmark of `convert` and `parity check` under load: slowdown beside busy processes.

Phases: `convert` of the bundled NanoDet-Plus-m with --legacy-head (its verify
stage also on its own, from the stage's timing) and `parity check --synthetic 5`
of a folder it made. Each runs as its own process, once per thread policy:
`as-is` (the code as it stands) and `limited` (`common.threads.limit_threads()`
called first; since `convert_checkpoint` and `prepare_check` call it themselves,
the two now run the same, and `limited` matters when measuring an older
checkout), quiet and beside `--busy` pure-Python CPU burners, back to back
(loaded first every other round). Reported: medians over rounds of ratios
within one such pair.

Fair share. While a run is loaded, the burners are perfectly behaved
single-threaded jobs in the same conditions (they share the run's session, so
Linux's autogroups put them in one scheduling group with it): a fair scheduler
gives each of the run's runnable threads what each burner gets, b cores (their
CPU seconds over wall seconds, read from /proc during the run). Quiet, the run
had c cores per runnable thread (CPU seconds over wall seconds over d, its mean
number of runnable threads, sampled from /proc every 20 ms; spinning threads
count), so its fair slowdown is max(1, c / b). That holds whatever else the
shared machine runs meanwhile. On an idle machine of C cores with N burners it
is max(1, (N + d) / C): 2x for a run of one thread and 2.5x for two beside three
burners on two cores ("theory" below). Goal: slowdown <= 1.3x fair share.

    python benchmarks/bench_under_load.py [--busy 3] [--rounds 3] [--synthetic 5]
                                          [--policies as-is,limited] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "fixtures" / "nanodet-plus-m_416_coco.pth"
CONFIG = ROOT / "fixtures" / "nanodet-plus-m_416.yml"
GOAL = 1.3  # slowdown over the fair share
POLICIES = ("as-is", "limited")
PHASES = ("convert", "verify", "parity")
SAMPLE_SECONDS = 0.02
TICK = os.sysconf("SC_CLK_TCK")

# One runnable thread each; exits on its own once the benchmark is gone (even SIGKILLed).
BURNER = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n"
          "    for _ in range(1_000_000):\n        pass\n")


@contextmanager
def burners(count: int) -> Iterator[list[int]]:
    """`count` CPU-bound processes (their pids), killed on leaving, also on Ctrl-C."""
    started: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            started.append(subprocess.Popen([sys.executable, "-c", BURNER]))
        time.sleep(0.5)  # all running before anything is measured
        yield [process.pid for process in started]
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait()


def _stat_fields(path: str) -> list[str]:
    """/proc/.../stat from the state field on (the command name may hold spaces)."""
    text = Path(path).read_text()
    return text[text.rindex(")") + 2:].split()


def _runnable_threads(pid: int) -> int:
    """Threads of `pid` and its descendants that are running or waiting for a core."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    count = 0
    for tid in tids:
        try:
            state = _stat_fields(f"/proc/{pid}/task/{tid}/stat")[0]
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        count += state == "R"
        count += sum(_runnable_threads(int(child)) for child in children)
    return count


def _cpu_seconds_of(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(f"/proc/{pid}/stat")
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


class Sampler:
    """Samples, in a thread, the runnable threads of a process tree and the burners' CPU."""

    def __init__(self, pid: int, burner_pids: list[int]):
        self.pid = pid
        self.burner_pids = burner_pids
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), _runnable_threads(self.pid),
                                 _cpu_seconds_of(self.burner_pids)))
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float | None]:
        """Mean runnable threads, and cores each burner got, between `start` and `end`."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"demand": None, "burner_share": None}
        share = None
        if self.burner_pids and inside[-1][0] > inside[0][0]:
            share = (inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0]) \
                / len(self.burner_pids)
        return {"demand": statistics.fmean(s[1] for s in inside), "burner_share": share}


def _tree_env() -> dict[str, str]:
    """The environment, with this tree's packages first (the one measured)."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_phase(kind: str, policy: str, args: list[str], workdir: Path,
              burner_pids: list[int]) -> dict[str, Any]:
    """One phase in a child process: wall and CPU seconds, demand, burners' share, stages."""
    stats = workdir / f"{kind}-stats.json"
    log = workdir / f"{kind}-stderr.txt"
    command = [sys.executable, __file__, "--child", kind, "--policy", policy,
               "--stats", str(stats), "--", *args]
    start = time.perf_counter()
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=_tree_env())
    sampler = Sampler(process.pid, burner_pids)
    try:
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        sampler.stop()
        if process.returncode is None:
            process.kill()
            process.wait()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{kind} failed with exit code {process.returncode}:\n"
                         f"{log.read_text()}")
    stages = json.loads(stats.read_text())["stages"]
    for stage in stages.values():
        stage.update(sampler.window(stage.pop("start"), stage.pop("end")))
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, **sampler.window(),
            "stages": stages}


def convert_args(output: Path) -> list[str]:
    return [str(CHECKPOINT), "--config", str(CONFIG), "--legacy-head", "-o", str(output), "-q"]


def parity_args(folder: Path, synthetic: int) -> list[str]:
    return ["check", str(CHECKPOINT), str(folder), "--config", str(CONFIG),
            "--synthetic", str(synthetic), "-q"]


def paired(run: Callable[[list[int]], dict[str, Any]], busy: int,
           loaded_first: bool) -> dict[str, Any]:
    """`run` quiet and beside `busy` burners, back to back."""
    figures: dict[str, Any] = {}
    for loaded in ((True, False) if loaded_first else (False, True)):
        with burners(busy if loaded else 0) as pids:
            figures["loaded" if loaded else "quiet"] = run(pids)
    return figures


def one_round(policy: str, busy: int, folder: Path, synthetic: int, work: Path,
              loaded_first: bool) -> dict[str, Any]:
    """`convert` and `parity check`, each quiet and loaded."""
    output = work / "converted"

    def convert(pids: list[int]) -> dict[str, Any]:
        shutil.rmtree(output, ignore_errors=True)
        return run_phase("convert", policy, convert_args(output), work, pids)

    def check(pids: list[int]) -> dict[str, Any]:
        return run_phase("parity", policy, parity_args(folder, synthetic), work, pids)

    figures = {"convert": paired(convert, busy, loaded_first)}
    figures["verify"] = {when: run["stages"]["verify"]
                         for when, run in figures["convert"].items()}
    figures["parity"] = paired(check, busy, loaded_first)
    shutil.rmtree(output, ignore_errors=True)
    return figures


def fair_slowdown(pair: dict[str, Any]) -> float:
    """max(1, c / b): the quiet run's cores per runnable thread over a burner's cores."""
    quiet, loaded = pair["quiet"], pair["loaded"]
    per_thread = min(1.0, quiet["cpu"] / (quiet["wall"] * max(quiet["demand"] or 1.0, 0.01)))
    return max(1.0, per_thread / loaded["burner_share"])


def theory_fair(demand: float, busy: int, cores: int) -> float:
    """Fair slowdown of a run of `demand` runnable threads beside `busy` burners, idle machine."""
    return max(1.0, (busy + demand) / cores)


def _slowdown(pair: dict[str, Any]) -> float:
    return pair["loaded"]["wall"] / pair["quiet"]["wall"]


def _median(values: Iterator[float]) -> float:
    return round(statistics.median(values), 2)


def summarise(rounds: list[dict[str, Any]], busy: int, cores: int) -> dict[str, Any]:
    """Per phase: medians over rounds of the times, slowdown, fair share and their ratio."""
    summary: dict[str, Any] = {}
    for phase in PHASES:
        pairs = [r[phase] for r in rounds]
        demand = statistics.median(p["quiet"]["demand"] or 1.0 for p in pairs)
        over = statistics.median(_slowdown(p) / fair_slowdown(p) for p in pairs)
        summary[phase] = {
            "quiet_seconds": _median(p["quiet"]["wall"] for p in pairs),
            "loaded_seconds": _median(p["loaded"]["wall"] for p in pairs),
            "quiet_demand_threads": round(demand, 2),
            "loaded_cpu_over_quiet_cpu": _median(p["loaded"]["cpu"] / p["quiet"]["cpu"]
                                                 for p in pairs),
            "burner_share_cores": _median(p["loaded"]["burner_share"] for p in pairs),
            "slowdown": _median(_slowdown(p) for p in pairs),
            "fair_share": _median(fair_slowdown(p) for p in pairs),
            "fair_share_idle_machine": round(theory_fair(demand, busy, cores), 2),
            "over_fair_share": round(over, 2), "meets_goal": over <= GOAL}
    stages = [name for name, stage in rounds[0]["convert"]["quiet"]["stages"].items()
              if stage["wall"] >= 0.5]
    summary["convert"]["stages_over_fair_share"] = {
        name: _median(_slowdown(pair) / fair_slowdown(pair) for pair in (
            {when: r["convert"][when]["stages"][name] for when in ("quiet", "loaded")}
            for r in rounds)) for name in stages}
    return summary


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['busy']} busy processes on {report['cores']} cores, {report['rounds']} "
          f"rounds; goal: slowdown <= {GOAL} x fair share")
    print(f"{'policy':8} {'phase':8} {'quiet s':>8} {'loaded s':>9} {'threads':>8} "
          f"{'slowdown':>9} {'fair':>5} {'idle':>5} {'/fair':>6} {'cpu x':>6}  goal")
    for policy, phases in report["policies"].items():
        for phase in PHASES:
            s = phases[phase]
            print(f"{policy:8} {phase:8} {s['quiet_seconds']:8.2f} {s['loaded_seconds']:9.2f} "
                  f"{s['quiet_demand_threads']:8.2f} {s['slowdown']:8.2f}x "
                  f"{s['fair_share']:5.2f} {s['fair_share_idle_machine']:5.2f} "
                  f"{s['over_fair_share']:6.2f} {s['loaded_cpu_over_quiet_cpu']:6.2f}  "
                  f"{'ok' if s['meets_goal'] else 'MISSED'}")
        print(f"{'':8} convert stages, slowdown / fair: " + ", ".join(
            f"{name} {ratio}" for name, ratio in phases["convert"]["stages_over_fair_share"]
            .items()))


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    policies = [p for p in args.policies.split(",") if p]
    if not policies or set(policies) - set(POLICIES):
        raise SystemExit(f"--policies: choose from {','.join(POLICIES)}")
    cores = len(os.sched_getaffinity(0))
    rounds: dict[str, list[dict[str, Any]]] = {policy: [] for policy in policies}
    with tempfile.TemporaryDirectory(prefix="bench-under-load-") as tmp:
        work = Path(tmp)
        folder = work / "folder"
        run_phase("convert", policies[-1], convert_args(folder), work, [])  # warms caches too
        for number in range(args.rounds):
            for policy in policies if number % 2 == 0 else policies[::-1]:
                figures = one_round(policy, args.busy, folder, args.synthetic, work,
                                    loaded_first=number % 2 == 1)
                rounds[policy].append(figures)
                print(f"round {number + 1}/{args.rounds} {policy}: " + ", ".join(
                    f"{phase} {f['quiet']['wall']:.1f}s -> {f['loaded']['wall']:.1f}s "
                    f"(fair {fair_slowdown(f):.2f}x)" for phase, f in figures.items()),
                    file=sys.stderr, flush=True)
    return {"busy": args.busy, "cores": cores, "rounds": args.rounds,
            "synthetic": args.synthetic, "goal_over_fair_share": GOAL,
            "policies": {policy: summarise(r, args.busy, cores) for policy, r in rounds.items()},
            "raw": rounds}


# --- child process: one phase, as its command line runs it ------------------------------

def _own_cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _probe_stages(stages: dict[str, dict[str, float]]) -> None:
    """Record each convert stage's wall and CPU seconds (threads and children) and its
    monotonic start and end in `stages`."""
    from convert import pipeline

    original = pipeline.StageClock.stage

    @contextmanager
    def timed(clock: Any, name: str) -> Iterator[None]:
        start, wall, cpu = time.monotonic(), time.perf_counter(), _own_cpu_seconds()
        with original(clock, name):
            yield
        stages[name] = {"wall": time.perf_counter() - wall, "cpu": _own_cpu_seconds() - cpu,
                        "start": start, "end": time.monotonic()}

    pipeline.StageClock.stage = timed


def child(kind: str, policy: str, stats: Path, argv: list[str]) -> None:
    if policy == "limited":
        from common.threads import limit_threads

        limit_threads()
    stages: dict[str, dict[str, float]] = {}
    if kind == "convert":
        from convert.cli import main

        _probe_stages(stages)
    else:
        from parity.cli import main
    try:
        main(argv, prog_name=kind)
    finally:
        stats.write_text(json.dumps({"stages": stages}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=3, help="CPU-bound processes beside the run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=5, help="parity check's --synthetic")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("convert", "parity"), help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.policy, args.stats, args.child_args)
        return
    if args.busy < 1 or args.rounds < 1:
        parser.error("--busy and --rounds must be at least 1")
    # SIGTERM as Ctrl-C: the `finally` blocks stop the burners and the running phase.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = benchmark(args)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
