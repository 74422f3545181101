"""Internals the parity figures rely on: runners, tensor figures, decode reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import InputError
from heads.detector import build_detector
from heads.loader import load_detector
from parity.detect import legacy_layout_detections
from parity.ncnn_param import Param
from parity.preprocess import frame_to_tensor
from parity.runners.ncnn_fp16 import Fp16CastNcnnRunner
from parity.runners.ncnn_runner import NcnnRunner, net_layers
from parity.runners.torch_runner import SharedForward
from parity.stages import COMPARE_MIN_SCORE, StageContext
from parity.tensor_stats import HIST_EDGES, tensor_record
from tests.conftest import (
    PLUS_CFG,
    PLUS_PTH,
    REFERENCE_NCNN,
    photo,
    seeded_state_dict,
    small_spec,
)


def eager_logits(model, feed: np.ndarray) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t for level in model(torch.from_numpy(feed)) for t in level]


@pytest.mark.parametrize("plus", [True, False])
def test_frozen_forward_is_bit_identical_to_eager(plus):
    model = build_detector(small_spec(plus))
    model.load_state_dict(seeded_state_dict(small_spec(plus)))
    forward = SharedForward(model, frozen=True)
    for size in ((320, 256), (224, 160)):  # a second input shape traces again
        feed, _ = frame_to_tensor(photo("chelsea"), *size)
        frozen = [t for level in forward(feed) for t in level]
        eager = eager_logits(model, feed)
        assert len(frozen) == len(eager)
        for ours, reference in zip(frozen, eager):
            assert torch.equal(ours, reference)


def test_frozen_forward_of_the_real_plus_checkpoint_is_bit_identical():
    model = load_detector(PLUS_PTH, PLUS_CFG).model
    feed, _ = frame_to_tensor(photo("motorcycle_left"), 320, 256)
    frozen = [t for level in SharedForward(model, frozen=True)(feed) for t in level]
    assert all(torch.equal(a, b) for a, b in zip(frozen, eager_logits(model, feed)))


def test_tensor_record_known_values():
    reference = np.array([[1.0, 2.0], [0.0, 4.0]], np.float32)
    stage = np.array([[1.0, 2.5], [1e-3, np.inf]], np.float32)
    record = tensor_record(reference, stage, None)
    assert record["count"] == 4 and record["nonfinite"] == 1
    assert record["max_abs"] == np.inf
    assert record["sum_abs"] == pytest.approx(0.5 + 1e-3, rel=1e-6)
    hist = np.array(record["hist"])
    assert hist.sum() == 4 and hist[0] == 1 and hist[-1] == 1  # the exact zero; the inf
    assert HIST_EDGES[hist.nonzero()[0][1]] <= 1e-3 < HIST_EDGES[hist.nonzero()[0][1] + 1]


def test_tensor_record_of_an_exact_copy_takes_the_short_path_to_the_same_figures():
    rng = np.random.default_rng(3)
    blob = rng.random((300, 12), dtype=np.float32)
    blob[:5, :4] = 0.9  # rows above the argmax score floor
    short = tensor_record(blob, blob.copy(), 4)
    general = tensor_record(blob, blob.astype(np.float64), 4)  # dtypes differ: no shortcut
    assert short == general
    assert short["argmax_rows"] == short["argmax_agree"] > 0


def test_decode_reuse_only_for_identical_outputs():
    from parity.targets.unitv2 import DEVICE

    box = DEVICE.letterbox(640, 480)
    names = [f"{kind}{s}" for s in (8, 16, 32) for kind in ("cls", "dis")]
    rng = np.random.default_rng(0)

    def outputs(hot: float) -> dict[str, np.ndarray]:
        out = {}
        for s in (8, 16, 32):
            cells = (256 // s) * (320 // s)
            cls = np.zeros((cells, 3), np.float32)
            cls[cells // 2, 1] = hot
            out[f"cls{s}"], out[f"dis{s}"] = cls, rng.normal(size=(cells, 32)).astype(np.float32)
        return out

    context = StageContext(3, (8, 16, 32), 0.5, ["a", "b", "c"])
    first, second = outputs(0.9), outputs(0.7)
    for out in (first, second, first, {k: v.copy() for k, v in second.items()}):
        expected = legacy_layout_detections(out, names, box, COMPARE_MIN_SCORE)
        got = context.decode("legacy", out, names, box)
        assert np.array_equal(got.scores, expected.scores)
        assert np.array_equal(got.boxes, expected.boxes)


@pytest.mark.parametrize("stem", ["nanodet_m", "nanodet-plus-m_416"])
def test_the_loaded_nets_layers_are_the_files(stem):
    param, weights = REFERENCE_NCNN / f"{stem}.param", REFERENCE_NCNN / f"{stem}.bin"
    runner = NcnnRunner(param, weights, Param.read(param).layers[0].tops[0], [])
    from_net = [(l.type, l.name, l.bottoms, l.tops) for l in net_layers(runner.net)]
    from_file = [(l.type, l.name, l.bottoms, l.tops) for l in Param.read(param).layers]
    assert from_net == from_file and len(from_net) > 100


def test_runners_refuse_blob_names_the_param_lacks():
    param, weights = REFERENCE_NCNN / "nanodet_m.param", REFERENCE_NCNN / "nanodet_m.bin"
    assert NcnnRunner(param, weights, "input.1", ["792", "424"]).output_names == ["792", "424"]
    with pytest.raises(InputError, match="has no blob named 'nope'"):
        NcnnRunner(param, weights, "input.1", ["792", "nope"])
    # the fp16 Cast runner loads a rewritten net whose Cast blobs are not the model's
    assert Fp16CastNcnnRunner(param, weights, "input.1", ["792"]).output_names == ["792"]
    with pytest.raises(InputError, match="has no blob named '424__fp16'"):
        Fp16CastNcnnRunner(param, weights, "input.1", ["792", "424__fp16"])
