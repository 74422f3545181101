"""A consumer of the legacy NanoDet layout on current ncnn (e.g. NanoDet's ncnn demo).

No firmware to emulate. It reads the same blob names, normalisation and model.json as the
UnitV2 (a legacy-layout folder is written the same way for both), and is linted against
current ncnn instead of the 2021 library.
"""

from __future__ import annotations

from parity.targets.base import LEGACY_NANODET_BLOBS, NANODET_NORMALISATION, Target
from parity.targets.unitv2 import UNITV2

NCNN_LATEST = Target(
    name="ncnn-latest",
    description="current ncnn reading the legacy NanoDet layout (no device)",
    ncnn_tables=("ncnn-latest",),
    blobs=LEGACY_NANODET_BLOBS,
    net_size=UNITV2.net_size,
    normalisation=NANODET_NORMALISATION,
    model_json=UNITV2.model_json,
)
