"""Bad checkpoints and configs: one line naming the file, exit 2, no traceback."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

from convert.cli import main
from tests.conftest import LEGACY_CFG, LEGACY_PTH, PLUS_CFG, PLUS_PTH, ROOT


def run_info(*args: str):
    result = CliRunner().invoke(main, [*map(str, args), "--info"])
    return result.exit_code, result.stderr.strip()


def assert_one_line_error(code: int, err: str, path, *phrases: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert str(path) in err
    for phrase in phrases:
        assert phrase in err, err


class CreatesFile:
    """A pickle payload that would create a file if it ever ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("with_torch_save", [True, False])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, with_torch_save):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"x": CreatesFile(str(marker))}}
    if with_torch_save:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "refused")
    assert not marker.exists()


def test_cli_process_prints_one_line_without_traceback(tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(LEGACY_PTH.read_bytes()[:100_000])
    proc = subprocess.run([sys.executable, "-m", "convert", str(path), "--info"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr.strip(), path, "truncated or corrupt")


def test_missing_file(tmp_path):
    code, err = run_info(tmp_path / "nope.pth")
    assert_one_line_error(code, err, tmp_path / "nope.pth", "no such checkpoint file")


def test_directory(tmp_path):
    code, err = run_info(tmp_path)
    assert_one_line_error(code, err, tmp_path, "is a directory")


def test_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "locked.pth"
    path.write_bytes(LEGACY_PTH.read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for a user

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("heads.checkpoint.open", denied, raising=False)
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "permission denied")


@pytest.mark.parametrize("content", [b"", b"garbage that is no zip and no pickle" * 10])
def test_corrupt(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "corrupt")


def test_truncated(tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(PLUS_PTH.read_bytes()[:-5000])
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "truncated or corrupt")


def test_unknown_architecture(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "matches no known NanoDet architecture")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "not a NanoDet checkpoint")


def test_config_and_checkpoint_disagree_names_key_and_shapes(tmp_path):
    cfg = yaml.safe_load(LEGACY_CFG.read_text())
    cfg["model"]["arch"]["head"]["num_classes"] = 20
    cfg["class_names"] = cfg["class_names"][:20]
    config = tmp_path / "cfg.yml"
    config.write_text(yaml.safe_dump(cfg))
    code, err = run_info(LEGACY_PTH, "--config", config)
    assert_one_line_error(code, err, LEGACY_PTH, "config and checkpoint disagree",
                          "head.gfl_cls.0.weight", "(52, 96, 1, 1)", "(112, 96, 1, 1)")


def test_legacy_checkpoint_with_plus_config(tmp_path):
    code, err = run_info(LEGACY_PTH, "--config", PLUS_CFG)
    assert_one_line_error(code, err, LEGACY_PTH, "config and checkpoint disagree")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights(tmp_path, bad):
    sd = torch.load(LEGACY_PTH, weights_only=True)["state_dict"]
    sd["head.gfl_cls.1.bias"][3] = bad
    path = tmp_path / "nan.pth"
    torch.save({"state_dict": sd}, path)
    code, err = run_info(path)
    assert_one_line_error(code, err, path, "head.gfl_cls.1.bias", "NaN/Inf")


@pytest.mark.parametrize("section, key, value, phrase", [
    ("backbone", "activation", "Swish", "not a NanoDet activation"),
    ("head", "activation", "Mish", "not a NanoDet activation"),
    ("backbone", "model_size", "0.75x", "not a ShuffleNetV2 size"),
    ("backbone", "name", "FooNet", "not supported"),
])
def test_bad_config_values(tmp_path, section, key, value, phrase):
    cfg = yaml.safe_load(LEGACY_CFG.read_text())
    cfg["model"]["arch"][section][key] = value
    config = tmp_path / "bad.yml"
    config.write_text(yaml.safe_dump(cfg))
    code, err = run_info(LEGACY_PTH, "--config", config)
    assert_one_line_error(code, err, config, phrase)


def test_config_not_yaml(tmp_path):
    config = tmp_path / "broken.yml"
    config.write_text("model: [unclosed\n")
    code, err = run_info(LEGACY_PTH, "--config", config)
    assert_one_line_error(code, err, config, "not valid YAML")


def test_class_names_file_count_must_match(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    code, err = run_info(LEGACY_PTH, "--class-names", names)
    assert_one_line_error(code, err, names, "2 class names", "80 classes")


def test_info_json_and_class_names(tmp_path):
    import json
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing{i}" for i in range(80)))
    result = CliRunner().invoke(main, [str(LEGACY_PTH), "--class-names", str(names), "--info",
                                       "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["class_names"][79] == "thing79"
    assert info["head"]["kind"] == "NanoDetHead" and info["architecture_source"] == "inferred"
    assert info["format"] == "nanodet-v0.x-pth"
