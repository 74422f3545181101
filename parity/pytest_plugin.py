"""pytest integration of `parity`: gate a release in a test.

Loaded in every pytest run of the environment through the `pytest11` entry point
`nanodet_unitv2` (with PYTEST_DISABLE_PLUGIN_AUTOLOAD set: `-p nanodet_unitv2`;
without the entry point: `-p parity.pytest_plugin`, never both), so importing it
loads nothing heavy: no numpy, torch, onnx or ncnn until a check runs.

    from parity.pytest_plugin import assert_parity

    def test_release_model(parity_check):
        report = parity_check("model.pth", "unitv2/", config="model.yml", synthetic=0)
        assert_parity(report)

* Fixture `parity_check(checkpoint, model_dir, images=None, **options)`: `parity.check`
  with the same arguments (README "Python API"); writes `parity.json`, `parity.xml`
  (JUnit) and `parity.html` into the test's report folder and returns the
  `ParityReport`. A second check in the same test writes `parity-2.*`, and so on. The
  report folder is `<tmp_path>/parity`; with `--parity-reports DIR` it is
  `DIR/<node id as a file name>-<8 hex of its sha256>` (kept, e.g. as CI artifacts;
  files of the same name are replaced). The paths are also the test's user properties
  `parity_json`, `parity_junit`, `parity_html`, which pytest's `--junitxml` records.
* `assert_parity(report)`: fails the test, without a traceback, with the verdict, the
  blamed stage, every failing check with its value and limit, and the report paths.
* Bad input (`parity.InputError`, or any one-line tool error) raised by `parity_check`
  is reported as an ERROR of the test with its one line, `parity: error: FILE: problem`
  (pytest's own `--junitxml` files anything a test body raises as a `<failure>`; its
  message is that line).
* Defaults for `parity_check`'s keyword arguments: ini options `parity_profile` and
  `parity_tolerances` (a path, relative to the ini file's folder), and the marker
  `@pytest.mark.parity(profile=..., tolerances=..., synthetic=..., ...)` over them;
  arguments of the call win over both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from common.errors import ToolError

if TYPE_CHECKING:
    from parity.api import ParityReport
    from parity.report_types import Check

# (kind, ParityReport writer, file suffix), in the order written
REPORT_FILES = (("json", "write_json", ".json"), ("junit", "write_junit", ".xml"),
                ("html", "write_html", ".html"))
REPORT_STEM = "parity"
READABLE_NAME_MAX = 100  # characters of the node id kept in a report folder's name
BAD_INPUT = pytest.StashKey[ToolError]()

# id(report) -> (report, its report files), while the test that made it runs
_written: dict[int, tuple[ParityReport, dict[str, Path]]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nanodet-unitv2", "parity checks (nanodet-unitv2)")
    group.addoption("--parity-reports", metavar="DIR", default=None,
                    help="Keep the reports of the parity_check fixture in DIR, one folder "
                         "per test named after its node id.")
    parser.addini("parity_profile", "Default tolerance profile of parity_check "
                  "(a [profiles.NAME] table).", default=None)
    parser.addini("parity_tolerances", "Default tolerances TOML of parity_check, relative "
                  "to the ini file's folder.", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "parity(**options): default keyword arguments of the "
                            "parity_check fixture in this test (profile, tolerances, ...)")
    folder = config.getoption("parity_reports", None)
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise pytest.UsageError(f"--parity-reports: {folder}: not a folder")


def report_folder_name(nodeid: str) -> str:
    """A file name for a test's reports: its node id made safe, with a hash to keep it unique."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid).strip("._-")[:READABLE_NAME_MAX]
    return f"{readable}-{hashlib.sha256(nodeid.encode()).hexdigest()[:8]}"


def report_folder(config: pytest.Config, nodeid: str, tmp_path: Path) -> Path:
    """Where a test's reports go: under --parity-reports, else its tmp_path."""
    chosen = config.getoption("parity_reports", None)
    if chosen is None:
        return tmp_path / REPORT_STEM
    return Path(config.invocation_params.dir, chosen) / report_folder_name(nodeid)


def check_defaults(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """parity_check's default keywords: the ini options, then the test's `parity` marker."""
    defaults: dict[str, Any] = {}
    if config.getini("parity_profile"):
        defaults["profile"] = config.getini("parity_profile")
    if config.getini("parity_tolerances"):
        base = config.inipath.parent if config.inipath else config.rootpath
        defaults["tolerances"] = base / config.getini("parity_tolerances")
    for marker in reversed(list(item.iter_markers("parity"))):  # the closest one last
        defaults.update(marker.kwargs)
    return defaults


@dataclass
class ParityChecker:
    """The `parity_check` fixture: runs a check, writes its reports, remembers their paths."""

    item: pytest.Item
    folder: Path
    defaults: dict[str, Any]
    checks: int = 0

    def __call__(self, checkpoint: str | Path, model_dir: str | Path, images: Any = None,
                 **options: Any) -> ParityReport:
        """`parity.check(checkpoint, model_dir, images, **options)`, its reports written."""
        __tracebackhide__ = True
        from parity.api import check

        try:
            report = check(checkpoint, model_dir, images, **{**self.defaults, **options})
            paths = self.write(report)
        except ToolError as exc:
            self.item.stash[BAD_INPUT] = exc
            raise
        _written[id(report)] = (report, paths)
        return report

    def write(self, report: ParityReport) -> dict[str, Path]:
        """The three reports of this test's next check, in its report folder."""
        self.checks += 1
        stem = REPORT_STEM if self.checks == 1 else f"{REPORT_STEM}-{self.checks}"
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = {kind: getattr(report, writer)(self.folder / f"{stem}{suffix}")
                 for kind, writer, suffix in REPORT_FILES}
        for kind, path in paths.items():
            self.item.user_properties.append((f"parity_{kind}", str(path)))
        return paths


@pytest.fixture
def parity_check(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ParityChecker]:
    """Call it like `parity.check(...)`; it writes the reports and returns the ParityReport."""
    item = request.node
    checker = ParityChecker(item, report_folder(request.config, item.nodeid, tmp_path),
                            check_defaults(request.config, item))
    made_before = set(_written)
    yield checker
    for key in set(_written) - made_before:
        del _written[key]


def check_line(check: Check) -> str:
    """`stage check: value (limit L)` of one gate check."""
    value = "not computed" if check.value is None else figure(check.value)
    return f"{check.stage} {check.check}: {value} (limit {figure(check.limit)})"


def figure(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def failure_message(report: ParityReport) -> str:
    """Verdict, blamed stage, every failing check with value and limit, report paths."""
    from parity.cli import verdict_line

    gate = report.report.gate
    lines = [verdict_line(report.report), f"blamed stage: {gate.blamed_stage}",
             "failing checks (stage check: value (limit)):"]
    lines += [f"  {check_line(check)}" for check in gate.checks if not check.passed]
    paths = _written.get(id(report), (None, {}))[1]
    if paths:
        lines += ["reports:", *(f"  {kind}: {path}" for kind, path in paths.items())]
    else:
        lines.append("reports: none written (use the parity_check fixture)")
    return "\n".join(lines)


def assert_parity(report: ParityReport) -> None:
    """Fail the test, with the gate's findings and the report paths, unless `report` passed."""
    __tracebackhide__ = True
    if not report.passed:
        pytest.fail(failure_message(report), pytrace=False)


@dataclass(frozen=True)
class OneLine:
    """A test's failure representation that is one line (and its own short summary)."""

    message: str

    @property
    def reprcrash(self) -> OneLine:  # what pytest's short test summary reads `.message` of
        return self

    def toterminal(self, out: Any) -> None:
        out.line(self.message, red=True, bold=True)

    def __str__(self) -> str:
        return self.message


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A tool error parity_check raised: the report says it in one line, as an error."""
    report = yield
    bad_input = item.stash.get(BAD_INPUT, None)
    if bad_input is not None and call.excinfo is not None and call.excinfo.value is bad_input:
        report.longrepr = OneLine(f"parity: error: {bad_input}")
        report.parity_bad_input = True
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    if report.when == "call" and getattr(report, "parity_bad_input", False):
        return "error", "E", "ERROR"
    return None
