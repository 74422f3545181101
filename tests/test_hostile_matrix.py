"""Every hostile or unusual case of tests/hostile/*_cases.py through one harness."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from convert import convert_checkpoint
from parity.images import bundled_images
from tests.conftest import LEGACY_CFG, LEGACY_PTH, PLUS_CFG
from tests.hostile import convert_cases, image_cases, input_cases, parity_cases
from tests.hostile.harness import Case, fresh_workspace, run_case

ALL_CASES: list[Case] = [*convert_cases.CASES, *input_cases.CASES, *parity_cases.CASES,
                         *image_cases.CASES]


def test_case_ids_are_unique():
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.fixture(scope="session")
def hostile_inputs(tmp_path_factory, small_checkpoints) -> dict[str, Path]:
    """Inputs every case may use, made once and copied into each case's workspace.

    plus.pth / legacy.pth: small seeded checkpoints (3 classes); plus.yml /
    legacy.yml: the official configs of the real models (80 classes, so they
    disagree with the small checkpoints); unitv2: the small Plus model converted
    with --legacy-head; native: the same in its native layout; legacy-unitv2: the
    small legacy model converted with --legacy-head; real-legacy.pth /
    real-legacy-unitv2: the real NanoDet-m and its conversion, which pass a check
    (random weights do not: use them for `parity` cases that must exit 0, with
    `--config legacy.yml`); images: two photos.
    """
    base = tmp_path_factory.mktemp("hostile-inputs")
    unitv2, native, legacy = base / "unitv2", base / "native", base / "legacy-unitv2"
    convert_checkpoint(small_checkpoints["plus"], legacy_head=True, output=unitv2, verify=False)
    convert_checkpoint(small_checkpoints["legacy"], legacy_head=True, output=legacy,
                       verify=False)
    real = base / "real-legacy-unitv2"
    convert_checkpoint(LEGACY_PTH, config=LEGACY_CFG, legacy_head=True, output=real,
                       verify=False)
    convert_checkpoint(small_checkpoints["plus"], output=native, verify=False,
                       target="ncnn-latest")
    images = base / "images"
    images.mkdir()
    for path in bundled_images()[:2]:
        shutil.copy(path, images / path.name)
    return {"plus.pth": small_checkpoints["plus"], "legacy.pth": small_checkpoints["legacy"],
            "plus.yml": PLUS_CFG, "legacy.yml": LEGACY_CFG, "unitv2": unitv2,
            "native": native, "legacy-unitv2": legacy, "real-legacy.pth": LEGACY_PTH,
            "real-legacy-unitv2": real, "images": images}


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_hostile_case(case: Case, hostile_inputs, tmp_path):
    run_case(case, fresh_workspace(tmp_path, hostile_inputs))
