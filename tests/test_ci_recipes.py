"""The CI recipes in examples/ci/ run as written: their exact commands, in order, on the fixtures.

GitHub steps' `run:` lines and GitLab jobs' `script:` lines are executed with bash in a
temporary working folder that links this repository's `fixtures/` and `examples/`,
with the variables the recipe sets. Installation and artifact transfer are skipped,
and only the steps listed here: a new step is run (or fails the test), never skipped
silently. Job conditions (`if:`, `when:`) are not evaluated: every job runs, as in a
passing pipeline; that a failing check fails its job is tested on a broken folder.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "ci"
GITHUB = RECIPES / "github-actions.yml"
GITLAB = RECIPES / "gitlab-ci.yml"
GATE = RECIPES / "release-gate.sh"

# What the tests do not run, and why: the package is already installed here, and
# artifacts stay in the one working folder all jobs share.
INSTALL_LINE = "pip install ."
SKIPPED_GITHUB_ACTIONS = {
    "actions/checkout",
    "actions/setup-python",
    "actions/upload-artifact",
    "actions/download-artifact",
}
SKIPPED_GITHUB_STEP_NAMES = {"Install"}
SKIPPED_GITLAB_LINES = {INSTALL_LINE}
GITLAB_KEYWORDS = {"stages", "default", "variables", "workflow", "include", "image",
                   "services", "before_script", "after_script", "cache"}

pytestmark = pytest.mark.slow

Command = tuple[str, str, dict[str, str]]  # (label, bash script, environment)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A checkout stand-in: the recipes' relative paths resolve to this repository."""
    for name in ("fixtures", "examples"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one step as the CI shells do: bash, stop at the first failing command."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600, check=False)


def assert_ran(result: subprocess.CompletedProcess, label: str) -> None:
    assert result.returncode == 0, (
        f"{label} exited {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}")


# --- GitHub Actions --------------------------------------------------------------------

GITHUB_EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def github_expand(text: str, env: dict[str, str], matrix: dict[str, object],
                  total: int) -> str:
    """Substitute the expressions the recipe may use; any other one fails the test."""
    def value(match: re.Match) -> str:
        expression = match.group(1)
        if expression.startswith("matrix."):
            return str(matrix[expression.removeprefix("matrix.")])
        if expression.startswith("env."):
            return env[expression.removeprefix("env.")]
        if expression == "strategy.job-total":
            return str(total)
        raise AssertionError(f"unsupported expression in a run line: {match.group(0)}")
    return GITHUB_EXPRESSION.sub(value, text)


def github_job_order(jobs: dict) -> list[str]:
    """Jobs in an order that respects `needs`."""
    ordered: list[str] = []
    while len(ordered) < len(jobs):
        ready = [name for name, job in jobs.items() if name not in ordered
                 and set(_as_list(job.get("needs", []))) <= set(ordered)]
        assert ready, f"cyclic or unknown needs among {sorted(set(jobs) - set(ordered))}"
        ordered.extend(ready)
    return ordered


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def matrix_rows(matrix: dict | None) -> list[dict[str, object]]:
    """The cartesian product of a `strategy.matrix` (no include/exclude in the recipe)."""
    if not matrix:
        return [{}]
    assert not {"include", "exclude"} & set(matrix), "expand include/exclude in the test first"
    keys = list(matrix)
    return [dict(zip(keys, row)) for row in itertools.product(*(matrix[k] for k in keys))]


def github_skipped(step: dict) -> bool:
    """True for the install and artifact steps listed above; any other `uses` fails."""
    if "uses" in step:
        action = step["uses"].split("@")[0]
        assert action in SKIPPED_GITHUB_ACTIONS, f"step uses {action}: run or list it"
        return True
    if step.get("name") in SKIPPED_GITHUB_STEP_NAMES:
        assert step["run"].strip() == INSTALL_LINE, step
        return True
    return False


def github_commands(workflow: dict) -> tuple[list[Command], list[str]]:
    """Every run step in order, and every path the workflow uploads."""
    commands: list[Command] = []
    uploads: list[str] = []
    top_env = {k: str(v) for k, v in workflow.get("env", {}).items()}
    for job_name in github_job_order(workflow["jobs"]):
        job = workflow["jobs"][job_name]
        rows = matrix_rows(job.get("strategy", {}).get("matrix"))
        for matrix in rows:
            job_env = {**top_env, **{k: str(v) for k, v in job.get("env", {}).items()}}
            for step in job["steps"]:
                env = {**job_env, **{k: str(v) for k, v in step.get("env", {}).items()}}
                if step.get("uses", "").startswith("actions/upload-artifact"):
                    path = github_expand(step["with"]["path"], env, matrix, len(rows))
                    uploads.extend(line.strip() for line in path.splitlines() if line.strip())
                if github_skipped(step):
                    continue
                label = f"{job_name} {matrix} {step.get('name', step['run'][:40])}"
                commands.append((label, github_expand(step["run"], env, matrix, len(rows)), env))
    return commands, uploads


def test_github_actions_recipe_runs_as_written(workdir: Path) -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    commands, uploads = github_commands(workflow)
    assert any("parity merge" in script for _, script, _ in commands)
    assert sum("--shard" in script for _, script, _ in commands) == 2
    for label, script, env in commands:
        assert_ran(run_bash(script, workdir, env), label)
    assert_uploads_exist(workdir, uploads, {"parity.xml", "parity.html", "parity.json"})


# --- GitLab CI -------------------------------------------------------------------------


def gitlab_jobs(pipeline: dict) -> Iterator[tuple[str, dict]]:
    """Jobs in stage order (file order within a stage), hidden `.jobs` left out."""
    stages = pipeline.get("stages", ["build", "test", "deploy"])
    jobs = [(name, job) for name, job in pipeline.items()
            if name not in GITLAB_KEYWORDS and not name.startswith(".")]
    for name, job in jobs:
        assert job.get("stage", "test") in stages, f"{name}: unknown stage"
    yield from sorted(jobs, key=lambda item: stages.index(item[1].get("stage", "test")))


def gitlab_instances(job: dict) -> list[dict[str, str]]:
    """The variables of each job instance `parallel` makes (N or matrix)."""
    parallel = job.get("parallel")
    if parallel is None:
        return [{}]
    if isinstance(parallel, int):
        return [{"CI_NODE_INDEX": str(i), "CI_NODE_TOTAL": str(parallel)}
                for i in range(1, parallel + 1)]
    instances = []
    for entry in parallel["matrix"]:
        keys = list(entry)
        values = [_as_list(entry[k]) for k in keys]
        instances += [dict(zip(keys, map(str, row))) for row in itertools.product(*values)]
    return instances


def gitlab_commands(pipeline: dict) -> tuple[list[Command], list[str]]:
    """Each job instance's before_script + script as one bash script, and its artifacts."""
    commands: list[Command] = []
    uploads: list[str] = []
    default = pipeline.get("default", {})
    top_vars = {k: str(v) for k, v in pipeline.get("variables", {}).items()}
    for name, job in gitlab_jobs(pipeline):
        lines = [*job.get("before_script", default.get("before_script", [])), *job["script"]]
        kept = [line for line in lines if line.strip() not in SKIPPED_GITLAB_LINES]
        for instance in gitlab_instances(job):
            env = {**top_vars, **{k: str(v) for k, v in job.get("variables", {}).items()},
                   **instance}
            commands.append((f"{name} {instance}", "\n".join(kept), env))
            artifacts = job.get("artifacts", {})
            paths = [*artifacts.get("paths", []), *artifacts.get("reports", {}).values()]
            uploads += [expand_with(path, env) for path in paths]
    return commands, uploads


def expand_with(text: str, env: dict[str, str]) -> str:
    """$VAR expansion with the job's variables (as the runner does for artifact paths)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], text)


def test_gitlab_recipe_runs_as_written(workdir: Path) -> None:
    pipeline = yaml.safe_load(GITLAB.read_text())
    commands, uploads = gitlab_commands(pipeline)
    assert [label.split()[0] for label, _, _ in commands] == [
        "convert", "parity", "parity", "report"]
    for label, script, env in commands:
        assert_ran(run_bash(script, workdir, env), label)
    assert_uploads_exist(workdir, uploads, {"parity.xml", "parity.html", "parity.json"})
    assert pipeline["report"]["artifacts"]["reports"]["junit"] == "reports/parity.xml"


def assert_uploads_exist(workdir: Path, uploads: list[str], report_names: set[str]) -> None:
    """Every uploaded path exists, the merged reports among them, and the merge passed."""
    for upload in uploads:
        assert (workdir / upload).exists(), f"uploaded path missing: {upload}"
    reports = workdir / "reports"
    assert report_names <= {p.name for p in reports.iterdir()}
    assert json.loads((reports / "parity.json").read_text())["gate"]["passed"] is True
    assert "<testsuite" in (reports / "parity.xml").read_text()


def test_skip_lists_name_only_install_and_artifact_steps() -> None:
    """The GitHub steps skipped are exactly install + checkout/python/artifact transfer."""
    workflow = yaml.safe_load(GITHUB.read_text())
    skipped = [step for job in workflow["jobs"].values() for step in job["steps"]
               if github_skipped(step)]
    assert {s["uses"].split("@")[0] for s in skipped if "uses" in s} == SKIPPED_GITHUB_ACTIONS
    assert {s["run"] for s in skipped if "run" in s} == {INSTALL_LINE}
    with pytest.raises(AssertionError, match="run or list it"):
        github_skipped({"uses": "someone/publish@v1"})


# --- release gate ----------------------------------------------------------------------

GATE_ENV = {"SYNTHETIC": "0"}  # CI time: the bundled photos only


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The gate as a release would run it: convert the fixture checkpoint, then check."""
    work = tmp_path_factory.mktemp("gate")
    for name in ("fixtures", "examples"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    return work, run_gate(work)


def run_gate(work: Path, *args: str, release_dir: str = "build/release",
             **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **GATE_ENV, "RELEASE_DIR": release_dir, **extra_env}
    return subprocess.run(["bash", "examples/ci/release-gate.sh", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_release_gate_passes_a_good_conversion(gate_run) -> None:
    work, result = gate_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "release-gate: PASS" in result.stderr
    for name in ("parity.json", "parity.xml", "parity.html"):
        assert (work / "build" / "release" / name).is_file()


def swapped_cls_dis_copy(model_dir: Path, destination: Path) -> Path:
    """A copy of a converted folder whose model.json swaps the cls and dis blobs."""
    shutil.copytree(model_dir, destination)
    model_json = destination / "model.json"
    data = json.loads(model_json.read_text())
    for node in data["model"]["modelOutputNodes"]:
        node["cls_pred"], node["dis_pred"] = node["dis_pred"], node["cls_pred"]
    model_json.write_text(json.dumps(data))
    return destination


def test_release_gate_fails_a_folder_with_cls_and_dis_swapped(gate_run, tmp_path) -> None:
    work, _ = gate_run
    broken = swapped_cls_dis_copy(work / "build" / "release" / "model", tmp_path / "broken")
    result = run_gate(work, str(broken), release_dir=str(tmp_path / "reports"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "release-gate: FAIL" in result.stderr
    report = json.loads((tmp_path / "reports" / "parity.json").read_text())
    assert report["gate"]["passed"] is False and report["gate"]["blamed_stage"] == "device"


def test_recipes_parity_steps_exit_1_on_a_broken_folder(gate_run, tmp_path) -> None:
    """The shard step of each recipe fails its job when parity fails (exit 1)."""
    work, _ = gate_run
    broken = swapped_cls_dis_copy(work / "build" / "release" / "model", tmp_path / "broken")
    github, _ = github_commands(yaml.safe_load(GITHUB.read_text()))
    gitlab, _ = gitlab_commands(yaml.safe_load(GITLAB.read_text()))
    shard_steps = [command for command in github if "--shard" in command[1]][:1]
    shard_steps += [command for command in gitlab if "--shard" in command[1]][:1]
    assert len(shard_steps) == 2
    for label, script, env in shard_steps:
        result = run_bash(script, work, {**env, "MODEL_DIR": str(broken)})
        assert result.returncode == 1, f"{label}: {result.stderr[-3000:]}"
        assert "parity: FAIL" in result.stdout


def test_release_gate_gates_the_drift_from_the_last_release(gate_run, tmp_path) -> None:
    """BASELINE: the last release's report; the same folder again shows no drift, the
    swapped one drifts (and fails parity) on the device stage."""
    work, _ = gate_run
    last = tmp_path / "last-release.json"
    shutil.copy(work / "build" / "release" / "parity.json", last)
    model = work / "build" / "release" / "model"
    again = run_gate(work, str(model), release_dir=str(tmp_path / "again"), BASELINE=str(last))
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((tmp_path / "again" / "parity.json").read_text())
    assert report["baseline"]["same_checkpoint"] and not report["baseline"]["changes"]
    broken = swapped_cls_dis_copy(model, tmp_path / "broken")
    drifted = run_gate(work, str(broken), release_dir=str(tmp_path / "drift"),
                       BASELINE=str(last))
    assert drifted.returncode == 1, drifted.stderr[-3000:]
    checks = json.loads((tmp_path / "drift" / "parity.json").read_text())["gate"]["checks"]
    assert any(c["stage"] == "device" and c["check"].startswith("baseline.")
               and not c["passed"] for c in checks)


def test_release_gate_exits_2_on_a_missing_folder(gate_run, tmp_path) -> None:
    work, _ = gate_run
    result = run_gate(work, str(tmp_path / "no-such-model"), release_dir=str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "release-gate: parity exited 2" in result.stderr
