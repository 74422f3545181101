"""`parity merge`: shards 1..N of one check merge; anything else is refused in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from parity.cli import main
from tests.crafted_reports import shard_reports, write_reports
from tests.report_validation import assert_valid_report


def merge(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["merge", *[str(a) for a in args]])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result.exit_code, result.stderr.strip()


def assert_refused(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


@pytest.fixture(scope="module")
def shards() -> list[dict]:
    return shard_reports(2, images=4)


def test_both_shards_merge_into_the_whole(shards, tmp_path):
    whole = shard_reports(1, images=4)[0]
    out = tmp_path / "merged.json"
    code, err = merge(*write_reports(tmp_path, shards), "-o", out)
    assert code in (0, 1), err
    merged = json.loads(out.read_text())
    assert_valid_report(merged)
    assert merged["images"]["shard"] is None and merged["images"]["count"] == 4
    for key in ("records", "summary", "gate"):
        assert merged[key] == whole[key], key


@pytest.mark.parametrize("records, phrase", [
    ("delete", "records: missing"),
    ("oops", "records: must be a list, not a string 'oops'"),
    ([{"image": "a.jpg"}], "records[0].frame_sha256: missing"),
    ("no-match", "records[0].stages.onnx.match: missing"),
    ("bad-index", "records[0].stages.onnx.match.pairs[0].ref: 7 points past the 3 reference"),
    ("short-hist", "records[0].stages.onnx.tensors.cls_pred_stride_8.hist: must have at least"),
    ("path-image", "records[0].image: '../../etc/passwd' is not a plain file name"),
])
def test_malformed_records_are_named_by_key_path(shards, tmp_path, records, phrase):
    broken = copy.deepcopy(shards[1])
    if records == "delete":
        del broken["records"]
    elif records == "no-match":
        del broken["records"][0]["stages"]["onnx"]["match"]
    elif records == "bad-index":
        broken["records"][0]["stages"]["onnx"]["match"]["pairs"][0]["ref"] = 7
    elif records == "short-hist":
        broken["records"][0]["stages"]["onnx"]["tensors"]["cls_pred_stride_8"]["hist"] = [1]
    elif records == "path-image":
        broken["records"][0]["image"] = "../../etc/passwd"
    else:
        broken["records"] = records
    paths = write_reports(tmp_path, [shards[0], broken])
    code, err = merge(*paths, "-o", tmp_path / "m.json")
    assert_refused(code, err, str(paths[1]), phrase)
    assert not (tmp_path / "m.json").exists()


def test_the_same_shard_twice_is_refused(shards, tmp_path):
    first = write_reports(tmp_path, [shards[0]])[0]
    again = write_reports(tmp_path, [shards[0]], ["again.json"])[0]
    code, err = merge(first, again, "-o", tmp_path / "m.json")
    assert_refused(code, err, str(again), "images.shard: 1/2 again")


def test_a_missing_shard_is_refused(shards, tmp_path):
    code, err = merge(*write_reports(tmp_path, shards[:1]), "-o", tmp_path / "m.json")
    assert_refused(code, err, "images.shard: shard 2/2 is missing")


def test_shards_of_different_counts_are_refused(shards, tmp_path):
    third = copy.deepcopy(shards[1])
    third["images"]["shard"] = "2/3"
    paths = write_reports(tmp_path, [shards[0], third])
    code, err = merge(*paths, "-o", tmp_path / "m.json")
    assert_refused(code, err, str(paths[1]), "images.shard: 2/3, but", "a shard of 2")


def test_an_unsharded_report_is_refused(tmp_path):
    whole = shard_reports(1, images=2)[0]
    whole["images"]["shard"] = None
    code, err = merge(*write_reports(tmp_path, [whole]), "-o", tmp_path / "m.json")
    assert_refused(code, err, "images.shard: null: not a shard")


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1/2/3", "one/two", ""])
def test_a_malformed_shard_is_refused(shards, tmp_path, shard):
    broken = copy.deepcopy(shards[0])
    broken["images"]["shard"] = shard
    code, err = merge(*write_reports(tmp_path, [broken, shards[1]]), "-o", tmp_path / "m.json")
    assert_refused(code, err, "images.shard", "is not i/N")


def test_shards_of_other_images_are_refused(shards, tmp_path):
    other = copy.deepcopy(shards[1])
    other["images"]["source"] = "elsewhere"
    paths = write_reports(tmp_path, [shards[0], other])
    code, err = merge(*paths, "-o", tmp_path / "m.json")
    assert_refused(code, err, str(paths[1]), "images.source differs")


def test_an_image_in_two_shards_is_refused(shards, tmp_path):
    other = copy.deepcopy(shards[1])
    other["records"][0]["image"] = shards[0]["records"][0]["image"]
    paths = write_reports(tmp_path, [shards[0], other])
    code, err = merge(*paths, "-o", tmp_path / "m.json")
    assert_refused(code, err, str(paths[1]), "records[0].image", "also in another shard")


def test_a_count_that_disagrees_with_the_records_is_refused(shards, tmp_path):
    other = copy.deepcopy(shards[1])
    other["images"]["count"] += 1
    paths = write_reports(tmp_path, [shards[0], other])
    code, err = merge(*paths, "-o", tmp_path / "m.json")
    assert_refused(code, err, str(paths[1]), "images.count: is 3 but records holds 2")


@pytest.mark.parametrize("value, phrase", [
    (float("inf"), "must be finite and >= 0"), (-1.0, "must be finite and >= 0"),
    ("lots", "must be a number"), (None, "must be a number")])
def test_report_tolerances_are_checked(shards, tmp_path, value, phrase):
    reports = copy.deepcopy(shards)
    for report in reports:
        report["tolerances"]["detections"]["max_edge_px"] = value
    code, err = merge(*write_reports(tmp_path, reports), "-o", tmp_path / "m.json")
    assert_refused(code, err, "tolerances.detections.max_edge_px", phrase)


def test_report_tolerances_must_be_complete(shards, tmp_path):
    reports = copy.deepcopy(shards)
    for report in reports:
        del report["tolerances"]["tensors"]["min_cosine"]
    code, err = merge(*write_reports(tmp_path, reports), "-o", tmp_path / "m.json")
    assert_refused(code, err, "tolerances.tensors.min_cosine missing")


def test_nonfinite_figures_written_as_strings_merge(shards, tmp_path):
    assert shards[0]["records"][0]["stages"]["device"]["input_max_diff"] == "inf"
    out = tmp_path / "merged.json"
    code, err = merge(*write_reports(tmp_path, shards), "-o", out)
    assert code == 1, err  # the inf input difference fails the device's input check
    merged = json.loads(out.read_text())
    assert_valid_report(merged)
    assert merged["summary"]["device"]["input_max_diff"] == "inf"
