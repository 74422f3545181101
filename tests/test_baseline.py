"""Release-to-release baselines: `parity check --baseline`, `parity merge --baseline` and
`parity diff` on crafted reports (each change made on purpose), and once on a real
converted folder against a report of another checkpoint (the retrained-model case)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

import parity
from common.errors import InputError
from parity.baseline import with_baseline
from parity.cli import main as parity_cli
from parity.drift_report import change_lines
from parity.gate import read_tolerances
from parity.report_codec import decode
from parity.report_schema import DIFF_SCHEMA_FILE, shipped_schema
from parity.report_types import Report
from tests.conftest import IMAGES, LEGACY_CFG, LEGACY_PTH, PLUS_PTH
from tests.crafted_reports import shard_reports, write_reports
from tests.junit_validation import cases, xsd_problems
from tests.report_validation import assert_valid_report

BASELINE_CHECKS = ["baseline.new", "baseline.lost", "baseline.min_iou",
                   "baseline.max_score_shift", "baseline.max_edge_px", "baseline.label_changes"]


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(parity_cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def whole() -> dict[str, Any]:
    """An unsharded crafted report of 4 photos (torch, onnx and device ran)."""
    report = shard_reports(1, images=4)[0]
    report["images"]["shard"] = None
    return report


def typed(report: dict[str, Any]) -> Report:
    return decode(Report, report)


def edited(report: dict[str, Any], stage: str, image: int, edit) -> dict[str, Any]:
    """A copy of `report` whose `stage` detections on record `image` went through `edit`."""
    changed = copy.deepcopy(report)
    rows = changed["records"][image]["stages"][stage]["detections"]
    changed["records"][image]["stages"][stage]["detections"] = edit(rows)
    return changed


def shown_row(report: dict[str, Any], stage: str, image: int) -> int:
    """The index of a detection the firmware shows (score >= 0.4) on that record."""
    rows = report["records"][image]["stages"][stage]["detections"]
    return next(i for i, row in enumerate(rows) if row[4] >= 0.4)


def drift_of(before: dict[str, Any], after: dict[str, Any]) -> Report:
    return with_baseline(typed(after), typed(before), Path("before.json"))


def drift_failures(report: Report) -> set[tuple[str, str]]:
    """(stage, check) of the failing baseline checks (the crafted reports' own parity checks
    fail on the device stage by design)."""
    return {(c.stage, c.check) for c in report.gate.checks
            if c.check.startswith("baseline.") and not c.passed}


def test_a_report_against_itself_has_no_drift_and_every_check(whole):
    report = drift_of(whole, whole)
    assert not drift_failures(report) and not report.baseline.changes
    assert report.baseline.same_checkpoint and report.baseline.changed_versions == {}
    for stage in ("torch", "onnx", "device"):
        names = [c.check for c in report.gate.checks if c.stage == stage]
        assert names[-6:] == BASELINE_CHECKS
    skipped = [c for c in report.gate.checks if c.stage == "onnx-sim"
               and c.check.startswith("baseline.")]
    assert len(skipped) == 6 and all(c.passed and "skipped in this run" in c.skipped
                                     for c in skipped)


def _move(dx: float, index: int):
    def edit(rows: list) -> list:
        rows[index] = [rows[index][0] + dx, rows[index][1], rows[index][2] + dx,
                       *rows[index][3:]]
        return rows
    return edit


def _score(value: float, index: int):
    def edit(rows: list) -> list:
        rows[index][4] = value
        return rows
    return edit


def _label(index: int):
    def edit(rows: list) -> list:
        rows[index][5] = (rows[index][5] + 1) % 3
        return rows
    return edit


def _add(rows: list) -> list:
    """One more shown detection, where no other is (appended: match indices stay valid)."""
    return rows + [[600.0, 400.0, 630.0, 470.0, 0.9, 1]]


@pytest.mark.parametrize("edit, kind, failing", [
    (lambda i: _move(12.0, i), "moved", {"baseline.max_edge_px", "baseline.min_iou"}),
    (lambda i: _score(0.99, i), "moved", {"baseline.max_score_shift"}),
    (lambda i: _label(i), "relabelled", {"baseline.label_changes"}),
    (None, "lost", {"baseline.lost"}),
    (lambda i: _add, "new", {"baseline.new"}),
], ids=["box", "score", "label", "lost", "new"])
def test_each_kind_of_change_is_found_and_gated_on_its_stage(whole, edit, kind, failing):
    if edit is None:  # lost: the baseline had one more
        before, after = edited(whole, "onnx", 1, _add), whole
    else:
        before, after = whole, edited(whole, "onnx", 1, edit(shown_row(whole, "onnx", 1)))
    report = drift_of(before, after)
    assert [(c.stage, c.image, c.kind) for c in report.baseline.changes] == [
        ("onnx", whole["records"][1]["image"], kind)]
    assert drift_failures(report) == {("onnx", name) for name in failing}
    assert "onnx" in report.gate.failing_stages


def test_a_detection_crossing_the_threshold_is_a_shift_not_new_or_lost(whole):
    index = shown_row(whole, "onnx", 1)
    score = whole["records"][1]["stages"]["onnx"]["detections"][index][4]
    after = edited(whole, "onnx", 1, _score(0.39, index))
    figures = drift_of(whole, after).baseline.stages["onnx"]
    assert (figures.new, figures.lost) == (0, 0)
    assert figures.max_score_shift == pytest.approx(score - 0.39, abs=1e-6)


def test_the_limits_are_the_tolerances_baseline_section(whole, tmp_path):
    index = shown_row(whole, "onnx", 1)
    after = edited(whole, "onnx", 1, _move(3.0, index))  # 3 px: within the default 4 px
    assert drift_failures(drift_of(whole, after)) == {("onnx", "baseline.min_iou")}
    for text, failing in (("min_iou = 0.5", set()),
                          ("min_iou = 0.5\nmax_edge_px = 2.0",
                           {("onnx", "baseline.max_edge_px")})):
        limits = tmp_path / "limits.toml"
        limits.write_text(f"[baseline]\n{text}\n")
        own = decode(Report, {**after, "tolerances": parity_tolerances(limits)})
        assert drift_failures(with_baseline(own, typed(whole), Path("b.json"))) == failing


def parity_tolerances(path: Path) -> dict[str, Any]:
    from parity.report import plain_json

    return plain_json(read_tolerances(path))


def test_other_frames_are_refused_naming_the_baseline(whole):
    other = copy.deepcopy(whole)
    other["records"][2]["frame_sha256"] = "ee" * 32
    with pytest.raises(InputError, match="holds other images: 1 of the 4 frames") as error:
        drift_of(whole, other)
    assert str(error.value.where) == "before.json"
    fewer = copy.deepcopy(whole)
    fewer["records"], fewer["images"]["count"] = fewer["records"][:3], 3
    with pytest.raises(InputError, match="1 of its 4 frames are not in the run"):
        drift_of(whole, fewer)


def test_a_shard_is_compared_with_its_frames_of_the_baseline(whole):
    shard = shard_reports(2, images=4)[0]
    report = with_baseline(typed(shard), typed(whole), Path("before.json"))
    assert not drift_failures(report) and report.baseline.stages["onnx"].images == 2


def test_another_checkpoint_is_allowed_and_said(whole):
    other = copy.deepcopy(whole)
    other["checkpoint"]["sha256"] = "99" * 32
    other["tool"] = {"nanodet-unitv2": "test", "libraries": {"ncnn": "2"}}
    drift = drift_of(whole, other).baseline
    assert drift.same_checkpoint is False
    assert drift.changed_versions == {"ncnn": (None, "2")}


def test_changes_shared_by_stages_are_one_line(whole):
    index = shown_row(whole, "onnx", 1)
    onnx_rows = copy.deepcopy(whole["records"][1]["stages"]["onnx"]["detections"])
    before = edited(whole, "device", 1, lambda rows: copy.deepcopy(onnx_rows))
    after = edited(edited(before, "onnx", 1, _label(index)), "device", 1, _label(index))
    lines = change_lines(drift_of(before, after).baseline.changes, ["a", "b", "c"])
    assert len(lines) == 1 and lines[0].startswith("onnx,device photo-01.jpg relabelled: ")


# ----------------------------------------------------------------------------- commands

@cache
def _diff_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(shipped_schema(DIFF_SCHEMA_FILE))


def test_diff_prints_writes_and_gates(whole, tmp_path):
    before, after = write_reports(tmp_path, [edited(whole, "onnx", 1, _add), whole],
                                  ["a.json", "b.json"])
    code, out, err = run("diff", before, before)
    assert code == 0 and out.endswith("within the baseline limits (0 changed detections)\n")
    code, out, err = run("diff", before, after, "-o", tmp_path / "d.json")
    assert code == 1, err
    assert out.splitlines()[0].startswith("onnx photo-01.jpg lost: ")
    assert out.splitlines()[-1].startswith("parity diff: DRIFT, first drifting stage: onnx")
    document = json.loads((tmp_path / "d.json").read_text())
    assert not list(_diff_validator().iter_errors(document))
    assert document["drift"]["stages"]["onnx"]["lost"] == 1


@pytest.mark.parametrize("breakage, phrase", [
    (lambda r: r.update(schema_version=2), "schema version 2 is not 3"),
    (lambda r: r["records"][0].update(frame_size=[0, 480]), "records[0].frame_size"),
    (lambda r: r.pop("gate"), "gate"),
], ids=["other-version", "bad-value", "missing-key"])
def test_diff_refuses_a_bad_report_in_one_line(whole, tmp_path, breakage, phrase):
    broken = copy.deepcopy(whole)
    breakage(broken)
    good, bad = write_reports(tmp_path, [whole, broken], ["good.json", "bad.json"])
    for args in ((good, bad), (bad, good)):
        code, out, err = run("diff", *args)
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"parity: error: {bad}: ") and phrase in err


def test_diff_of_other_images_is_refused(whole, tmp_path):
    other = copy.deepcopy(whole)
    other["records"][0]["frame_sha256"] = "ee" * 32
    a, b = write_reports(tmp_path, [whole, other], ["a.json", "b.json"])
    code, _, err = run("diff", a, b)
    assert code == 2 and "holds other images" in err and len(err.splitlines()) == 1


def test_merge_compares_the_merged_run_with_the_baseline(whole, tmp_path):
    shards = write_reports(tmp_path, shard_reports(2, images=4))
    baseline = write_reports(tmp_path, [whole], ["baseline.json"])[0]
    code, _out, err = run("merge", *shards, "-o", tmp_path / "m.json", "--baseline", baseline)
    assert code == 1 and "drift from baseline.json" in err  # 1: crafted device input fails
    merged = json.loads((tmp_path / "m.json").read_text())
    assert_valid_report(merged)
    assert merged["baseline"]["stages"]["onnx"]["images"] == 4
    compared = [(path, with_baseline(typed(json.loads(path.read_text())), typed(whole),
                                     baseline)) for path in shards]
    checked = tmp_path / "checked"
    checked.mkdir()
    from parity.report import write_json

    for path, report in compared:
        write_json(report, checked / path.name)
    code, _, err = run("merge", *sorted(checked.iterdir()), "-o", tmp_path / "n.json")
    assert code == 2 and "was checked against a baseline" in err and "--baseline" in err


# ----------------------------------------------------------------------------- real models

@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Path]:
    """The real legacy NanoDet-m converted, its report on two photos, and a report of the
    NanoDet-Plus-m checkpoint's conversion on the same photos (a retrained model)."""
    import convert

    tmp = tmp_path_factory.mktemp("baseline")
    photos = tmp / "photos"
    photos.mkdir()
    for name in ("astronaut.jpg", "coffee.jpg"):
        (photos / name).write_bytes((IMAGES / name).read_bytes())
    legacy = convert.convert(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True,
                             output=tmp / "legacy", verify=False).folder
    plus = convert.convert(PLUS_PTH, legacy_head=True, output=tmp / "plus",
                           verify=False).folder
    parity.check(LEGACY_PTH, legacy, photos, config=LEGACY_CFG).write_json(tmp / "m.json")
    parity.check(PLUS_PTH, plus, photos).write_json(tmp / "plus.json")
    return {"tmp": tmp, "photos": photos, "legacy": legacy}


def test_the_same_checkpoint_again_passes_its_baseline(real):
    tmp = real["tmp"]
    code, _out, err = run("check", LEGACY_PTH, real["legacy"], "--images", real["photos"],
                         "--config", LEGACY_CFG, "--baseline", tmp / "m.json", "--json",
                         tmp / "again.json", "--junit", tmp / "again.xml", "-q")
    assert code == 0, err
    report = json.loads((tmp / "again.json").read_text())
    assert_valid_report(report)
    assert report["baseline"]["same_checkpoint"] is True and not report["baseline"]["changes"]
    assert "the same checkpoint" in err
    assert not xsd_problems(tmp / "again.xml")
    names = [name for _, name in cases(tmp / "again.xml")]
    assert sum(name.endswith(check) for name in names for check in BASELINE_CHECKS) \
        == 6 * len(report["stages"])


def test_a_retrained_checkpoint_drifts_and_the_report_says_so(real):
    tmp = real["tmp"]
    code, out, err = run("check", LEGACY_PTH, real["legacy"], "--images", real["photos"],
                         "--config", LEGACY_CFG, "--baseline", tmp / "plus.json", "--json",
                         tmp / "retrained.json", "-q")
    assert code == 1, err
    report = json.loads((tmp / "retrained.json").read_text())
    assert report["baseline"]["same_checkpoint"] is False
    assert report["gate"]["blamed_stage"] == "torch"  # the model itself changed
    assert "another checkpoint" in err and "moved" in err
    assert out.splitlines()[-1].startswith("parity: FAIL, first failing stage: torch")


def test_a_baseline_of_other_images_is_one_line(real):
    """Other photos of as many frames: refused once hashed; fewer photos than the
    baseline's frames: refused before the run."""
    tmp = real["tmp"]
    code, out, err = run("check", LEGACY_PTH, real["legacy"], "--synthetic", "0",
                         "--config", LEGACY_CFG, "--baseline", tmp / "m.json", "-q")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"parity: error: {tmp / 'm.json'}: holds other images")
    one = tmp / "one-photo"
    one.mkdir(exist_ok=True)
    (one / "astronaut.jpg").write_bytes((IMAGES / "astronaut.jpg").read_bytes())
    progress: list[int] = []
    with pytest.raises(InputError, match="its 2 frames cannot all be among this run's 1"):
        parity.check(LEGACY_PTH, real["legacy"], one, config=LEGACY_CFG,
                     baseline=tmp / "m.json", progress=lambda done, total: progress.append(done))
    assert progress == []  # no image ran


def test_a_stage_only_in_the_baseline_is_named(whole, tmp_path):
    """The baseline ran ncnn-fp16, this run did not: its row says so (terminal and HTML)."""
    after = copy.deepcopy(whole)
    after["stages"] = [row for row in after["stages"] if row["name"] != "ncnn-fp16"]
    after["tolerances"].get("stages", {}).pop("ncnn-fp16", None)
    report = drift_of(whole, after)
    assert report.baseline.not_compared["ncnn-fp16"] == "only a stage of the baseline"
    from parity.html_report import render_html

    page = render_html(report, {}, ["a", "b", "c"])
    assert "only a stage of the baseline" in page and "Drift from the baseline" in page


def test_a_fifo_report_is_refused_unread(whole, tmp_path):
    """A named pipe given as a report: one line, no wait for a writer."""
    import os

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    good = write_reports(tmp_path, [whole], ["good.json"])[0]
    code, out, err = run("diff", fifo, good)
    assert code == 2 and out == "" and "is a FIFO (named pipe), not a JSON file" in err


def test_a_baseline_of_another_schema_version_is_refused_before_the_run(real):
    old = json.loads((real["tmp"] / "m.json").read_text())
    old["schema_version"] = 2
    (real["tmp"] / "v2.json").write_text(json.dumps(old))
    code, out, err = run("check", LEGACY_PTH, real["legacy"], "--synthetic", "0",
                         "--config", LEGACY_CFG, "--baseline", real["tmp"] / "v2.json", "-q")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err == f"parity: error: {real['tmp'] / 'v2.json'}: schema version 2 is not 3\n"


DRIFT_PROBE = """<script>
const section = [...document.querySelectorAll('section')].find(
  s => s.querySelector('h2').textContent === 'Drift from the baseline');
const rows = [...section.querySelectorAll('tbody tr')].map(tr => [...tr.children].map(
  td => [td.textContent, getComputedStyle(td).backgroundColor]));
const pre = document.createElement('pre');
pre.id = 'drift';
pre.textContent = JSON.stringify({rows, changes: [...section.querySelectorAll('li')].map(
  li => li.textContent)});
document.body.appendChild(pre);
</script>"""


def test_the_drift_section_renders_in_chromium(whole, tmp_path):
    """In a real browser: one row per stage, the drifting stage's status red, its change
    listed by class name."""
    import html
    import re

    from parity.html_report import render_html
    from tests.test_html_report import RED_CELL, find_chromium, run_chromium

    browser = find_chromium()
    if browser is None:
        pytest.skip("no chromium: `apt-get install -y chromium` to render the page headless")
    before = edited(whole, "onnx", 1, _add)
    page = tmp_path / "drift.html"
    page.write_text(render_html(drift_of(before, whole), {}, ["cat", "dog", "bird"])
                    .replace("</body>", DRIFT_PROBE + "</body>"))
    result = run_chromium(browser, tmp_path, ["--dump-dom"], page)
    found = re.search(r'<pre id="drift">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, result.stderr[-800:]
    measured = json.loads(html.unescape(found.group(1)))
    status = {row[0][0]: row[1] for row in measured["rows"]}
    assert list(status) == [row["name"] for row in whole["stages"]]
    assert status["onnx"] == ["DRIFT", RED_CELL] and status["torch"][0] == "ok"
    assert status["torch"][1] != RED_CELL
    assert measured["changes"] == change_lines(drift_of(before, whole).baseline.changes,
                                               ["cat", "dog", "bird"])
    assert measured["changes"][0].startswith("onnx photo-01.jpg lost: dog 0.900")
