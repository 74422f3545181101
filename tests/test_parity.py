"""`parity`: clean conversions pass; each injected fault fails, blamed on the right stage."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from convert import ConvertOptions, convert_model
from heads.export import flatten_cells
from heads.rewrites import LegacyAsIs, PlusToLegacyRewrite, RewriteStrategy
from parity.cli import main
from tests.conftest import LEGACY_CFG, LEGACY_PTH, PLUS_CFG, PLUS_PTH
from tests.junit_validation import cases, outcome, xsd_problems
from tests.report_validation import assert_valid_report

SYNTHETIC = "4"  # the 5 bundled photos + 4 seeded synthetic frames


def run_parity(*args: str | Path) -> tuple[int, dict | None, str]:
    """Run `parity check ...` with a JSON report; (exit code, report, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    report = None
    if "--json" in args:
        path = Path(args[list(args).index("--json") + 1])
        report = json.loads(path.read_text()) if path.exists() else None
        if report is not None:
            assert_valid_report(report)
    return result.exit_code, report, result.stderr


def check(tmp: Path, checkpoint: Path, folder: Path, config: Path | None = None,
          *extra: str) -> tuple[int, dict | None, str]:
    report = tmp / f"{folder.name}.json"
    args = ["check", checkpoint, folder, "--synthetic", SYNTHETIC, "--json", report, "-q",
            *extra]
    if config:
        args += ["--config", config]
    return run_parity(*args)


def convert_with(tmp: Path, name: str, checkpoint: Path, config: Path,
                 rewrite: RewriteStrategy | None = None, **options) -> Path:
    """Convert, optionally exporting with `rewrite` instead of the strategy options choose."""
    out = tmp / name
    convert_model(checkpoint, ConvertOptions(config=config, output=out, verify=False, **options),
                  rewrite=rewrite)
    return out


@dataclass(frozen=True)
class FaultyLegacy(LegacyAsIs):
    """The legacy layout as is, exported with one thing done wrong (the manifest says
    `none`: parity compares with the right graph)."""

    fault: str = "bgr-rgb"

    def wrapper(self, model):
        return Faulty(model, self.fault)


class Faulty(torch.nn.Module):
    """The legacy layout of a legacy NanoDet, with one thing done wrong."""

    def __init__(self, model, fault: str):
        super().__init__()
        self.model, self.fault = model, fault

    def forward(self, x):
        if self.fault == "bgr-rgb":
            x = x[:, [2, 1, 0]]
        if self.fault == "fp16-loss":  # exact in fp32; fp16 storage keeps 1 bit of it
            x = torch.relu(x + 3000.0) - 3000.0
        outputs = []
        for cls, dis in self.model(x):
            if self.fault == "sigmoid-missing":
                probs = cls
            elif self.fault == "sigmoid-twice":
                probs = torch.sigmoid(torch.sigmoid(cls))
            else:
                probs = torch.sigmoid(cls)
            outputs += [flatten_cells(probs), flatten_cells(dis)]
        return tuple(outputs)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parity")


@pytest.fixture(scope="module")
def legacy_clean(tmp) -> Path:
    return convert_with(tmp, "legacy-clean", LEGACY_PTH, LEGACY_CFG, legacy_head=True)


@pytest.fixture(scope="module")
def plus_clean(tmp) -> Path:
    return convert_with(tmp, "plus-clean", PLUS_PTH, PLUS_CFG, legacy_head=True)


def assert_blamed(result: tuple[int, dict | None, str], stage: str) -> dict:
    code, report, err = result
    assert code == 1, err
    assert report["gate"]["blamed_stage"] == stage, report["gate"]["failing_stages"]
    return report


def test_clean_legacy_passes(tmp, legacy_clean):
    code, report, err = check(tmp, LEGACY_PTH, legacy_clean, LEGACY_CFG, "--junit",
                              str(tmp / "legacy.xml"))
    assert code == 0, err
    assert report["gate"]["passed"] and report["summary"]["torch"]["detections"]["bands"][
        "firmware"]["reference"] > 10
    assert [s["status"] for s in report["stages"]] == ["ran"] * 7
    hashes = {r["input_sha256"] for r in report["records"]}
    for record in report["records"]:  # identical inputs: every tensor stage got the same bytes
        for name, entry in record["stages"].items():
            if name != "device":
                assert entry["input_sha256"] == record["input_sha256"]
    assert len(hashes) == len(report["records"])
    junit = cases(tmp / "legacy.xml")
    assert xsd_problems(tmp / "legacy.xml") == []
    assert len(junit) == len(report["gate"]["checks"])
    assert {cls for cls, _ in junit} == {f"parity.{s['name']}" for s in report["stages"]}
    assert {outcome(case) for case in junit.values()} == {"passed"}


def test_clean_plus_passes(tmp, plus_clean):
    code, report, err = check(tmp, PLUS_PTH, plus_clean, PLUS_CFG)
    assert code == 0, err
    device = report["summary"]["device"]
    assert device["input_max_diff"] < 1e-5 and device["json_lines"] > 0


@pytest.mark.parametrize("fault", ["bgr-rgb", "sigmoid-missing", "sigmoid-twice"])
def test_export_faults_blame_onnx(tmp, fault):
    folder = convert_with(tmp, fault, LEGACY_PTH, LEGACY_CFG, FaultyLegacy(fault),
                          legacy_head=True)
    assert_blamed(check(tmp, LEGACY_PTH, folder, LEGACY_CFG), "onnx")


def test_fp16_loss_blames_the_fp16_stage(tmp):
    folder = convert_with(tmp, "fp16-loss", LEGACY_PTH, LEGACY_CFG, FaultyLegacy("fp16-loss"),
                          legacy_head=True)
    report = assert_blamed(check(tmp, LEGACY_PTH, folder, LEGACY_CFG), "ncnn-fp16")
    assert report["gate"]["failing_stages"] == ["ncnn-fp16"]


def test_uncompensated_centre_blames_the_rewrite(tmp):
    naive = PlusToLegacyRewrite(stride64="drop", centre_compensation=False)
    folder = convert_with(tmp, "naive", PLUS_PTH, PLUS_CFG, naive, legacy_head=True,
                          stride64="drop")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rewrite"]["centre_compensation"] is False  # the folder says what it holds
    report = assert_blamed(check(tmp, PLUS_PTH, folder, PLUS_CFG), "torch-legacy")
    assert report["summary"]["torch-legacy"]["detections"]["bands"]["firmware"]["min_iou"] < 0.9


def test_dropped_stride64_blames_the_rewrite(tmp):
    folder = convert_with(tmp, "drop", PLUS_PTH, PLUS_CFG, legacy_head=True, stride64="drop")
    report = assert_blamed(check(tmp, PLUS_PTH, folder, PLUS_CFG), "torch-legacy")
    failed = {c["check"] for c in report["gate"]["checks"]
              if c["stage"] == "torch-legacy" and not c["passed"]}
    assert failed and all(c.startswith("detections.") for c in failed)  # large objects
    # only stride 64 found are lost or replaced by worse stride-32 boxes


def test_wrong_normalisation_blames_the_device(tmp, legacy_clean):
    config = yaml.safe_load(LEGACY_CFG.read_text())
    config["data"]["val"]["pipeline"]["normalize"] = [[0, 0, 0], [255, 255, 255]]
    path = tmp / "other-norm.yml"
    path.write_text(yaml.safe_dump(config))
    report = assert_blamed(check(tmp, LEGACY_PTH, legacy_clean, path), "device")
    assert report["summary"]["device"]["input_max_diff"] > 0.5


def _edit_model_json(tmp: Path, source: Path, name: str, edit) -> Path:
    folder = tmp / name
    shutil.copytree(source, folder)
    doc = json.loads((folder / "model.json").read_text())
    edit(doc["model"]["modelOutputNodes"])
    (folder / "model.json").write_text(json.dumps(doc))
    return folder


def test_cls_dis_swapped_in_model_json_blames_the_device(tmp, legacy_clean):
    def swap(nodes):
        for node in nodes:
            node["cls_pred"], node["dis_pred"] = node["dis_pred"], node["cls_pred"]

    folder = _edit_model_json(tmp, legacy_clean, "cls-dis-swapped", swap)
    report = assert_blamed(check(tmp, LEGACY_PTH, folder, LEGACY_CFG), "device")
    assert report["gate"]["failing_stages"] == ["device"]


def test_strides_swapped_in_model_json_blames_the_device(tmp, legacy_clean):
    def swap(nodes):
        nodes[0], nodes[2] = nodes[2], nodes[0]

    folder = _edit_model_json(tmp, legacy_clean, "strides-swapped", swap)
    assert_blamed(check(tmp, LEGACY_PTH, folder, LEGACY_CFG), "device")


def test_input_height_and_width_swapped_blames_the_device(tmp):
    folder = convert_with(tmp, "hw-swapped", LEGACY_PTH, LEGACY_CFG, legacy_head=True,
                          input_size=(256, 320))
    assert_blamed(check(tmp, LEGACY_PTH, folder, LEGACY_CFG), "device")


def test_shards_merge_into_the_unsharded_report(tmp, legacy_clean):
    whole = check(tmp, LEGACY_PTH, legacy_clean, LEGACY_CFG)[1]
    parts = []
    for index in (1, 2):
        out = tmp / f"shard{index}.json"
        code, _, err = run_parity("check", LEGACY_PTH, legacy_clean, "--config", LEGACY_CFG,
                                  "--synthetic", SYNTHETIC, "--shard", f"{index}/2", "--json",
                                  out, "-q")
        assert code == 0, err
        parts.append(out)
    merged_path = tmp / "merged.json"
    code, _, err = run_parity("merge", *parts, "-o", merged_path)
    assert code == 0, err
    merged = json.loads(merged_path.read_text())
    assert_valid_report(merged)
    for key in ("records", "summary", "gate", "stages", "tolerances"):
        assert merged[key] == whole[key], key
    assert merged["images"]["count"] == whole["images"]["count"]


def test_workers_give_the_same_records(tmp, legacy_clean):
    one = check(tmp, LEGACY_PTH, legacy_clean, LEGACY_CFG)[1]
    (tmp / "legacy-clean.json").rename(tmp / "one-worker.json")
    two = check(tmp, LEGACY_PTH, legacy_clean, LEGACY_CFG, "--workers", "2")[1]
    assert two["records"] == one["records"] and two["gate"] == one["gate"]


def test_fp16_stage_gives_the_layer_by_layer_bits_on_a_folded_plus_model(plus_clean):
    """Its Cast layers skip value-preserving layers (Split, Permute, max Pooling, ...):
    the converted Plus graph has each kind, and the bits still equal the reference."""
    from parity.model_folder import read_model_folder
    from parity.preprocess import frame_to_tensor
    from parity.runners.ncnn_fp16 import Fp16CastNcnnRunner
    from tests.conftest import photo
    from tests.fp16_reference import Fp16EmulatedNcnnRunner

    folder = read_model_folder(plus_clean)
    names = folder.output_names_of_manifest
    feed, _ = frame_to_tensor(photo("coffee"), *folder.input_size)
    args = (folder.param, folder.bin, folder.input_name, names)
    fast, slow = Fp16CastNcnnRunner(*args).infer(feed), Fp16EmulatedNcnnRunner(*args).infer(feed)
    for blob in names:
        assert np.array_equal(fast[blob], slow[blob]), blob
