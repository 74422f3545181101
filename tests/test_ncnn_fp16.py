"""fp16-storage emulation: ncnn run layer by layer with every blob rounded to half.

Uses the public NanoDet-m NCNN model (fixtures/reference-ncnn) on a bundled photo.
"""

from __future__ import annotations

import cv2
import ncnn
import numpy as np
import pytest

from parity.runners.ncnn_fp16 import fp16_round
from parity.runners.ncnn_runner import NcnnRunner
from tests.conftest import IMAGES, REFERENCE_NCNN
from tests.fp16_reference import Fp16EmulatedNcnnRunner

PARAM = REFERENCE_NCNN / "nanodet_m.param"
WEIGHTS = REFERENCE_NCNN / "nanodet_m.bin"
INPUT = "input.1"
CLS = ["792", "814", "836"]  # sigmoid class probabilities, strides 8 / 16 / 32
DIS = ["795", "817", "839"]  # distribution (box side) logits
OUTPUTS = ["792", "795", "814", "817", "836", "839"]
FIRST_CONV = "424"  # Conv_0 (+ leaky relu), the first layer after Input
POOLED = "425"  # MaxPool_3, split into two branches
BRANCH_CONV = "433"  # Conv_9 on 425_splitncnn_0: its only input is the (rounded) pool


def _is_fp16(x: np.ndarray) -> bool:
    return np.array_equal(x, x.astype(np.float16).astype(np.float32))


class Substituting(Fp16EmulatedNcnnRunner):
    """Feeds `substitutes[blob]` instead of the rounded blob (an experiment's fault)."""

    def __init__(self, *args, substitutes: dict[str, np.ndarray]):
        super().__init__(*args)
        unused = set(substitutes) - set(self.schedule)
        assert not unused, f"{sorted(unused)} are not computed on the way to the outputs"
        self.substitutes = substitutes

    def feed_back(self, blob: str, value: np.ndarray) -> np.ndarray:
        if blob in self.substitutes:
            return np.array(self.substitutes[blob], dtype=np.float32, copy=True)
        return super().feed_back(blob, value)


class Unrounded(Fp16EmulatedNcnnRunner):
    """The layer-by-layer machinery without any rounding."""

    def feed_back(self, blob: str, value: np.ndarray) -> np.ndarray:
        return np.array(value, dtype=np.float32, copy=True)


@pytest.fixture(scope="module")
def feed() -> np.ndarray:
    """chelsea.jpg as the UnitV2 firmware feeds it: 320x320 BGR, (x - mean) * norm."""
    image = cv2.imread(str(IMAGES / "chelsea.jpg"))
    assert image is not None
    x = cv2.resize(image, (320, 320)).astype(np.float32)
    x = (x - np.float32((103.53, 116.28, 123.675))) * np.float32((0.017429, 0.017507, 0.017125))
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def fp32() -> NcnnRunner:
    return NcnnRunner(PARAM, WEIGHTS, INPUT, OUTPUTS)


@pytest.fixture(scope="module")
def fp16() -> Fp16EmulatedNcnnRunner:
    return Fp16EmulatedNcnnRunner(PARAM, WEIGHTS, INPUT, OUTPUTS)


@pytest.fixture(scope="module")
def results(feed, fp32, fp16) -> tuple[dict, dict]:
    return fp32.infer(feed), fp16.infer(feed)


def test_fp16_round_matches_numpy_half_cast():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, -70000.0, np.inf, -np.inf,
                      2**-14, 2**-24, 2**-25, 3 * 2**-25, 1 + 2**-11, 1 + 3 * 2**-11],
                     dtype=np.float32)
    for x in (bits.view(np.float32), edges, rng.standard_normal((3, 5, 7)).astype(np.float32)):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = x.astype(np.float16).astype(np.float32)
        got = fp16_round(x)
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.array_equal(got, expected, equal_nan=True)
    assert fp16_round(np.float32([1 + 2**-11]))[0] == 1.0  # a tie rounds to even
    assert fp16_round(np.float32([1 + 3 * 2**-11]))[0] == 1 + 2**-9


def test_outputs_are_rounded_and_shaped_like_fp32(results):
    plain, emulated = results
    assert list(emulated) == OUTPUTS
    for blob in OUTPUTS:
        assert emulated[blob].dtype == np.float32
        assert emulated[blob].shape == plain[blob].shape
        assert _is_fp16(emulated[blob]), blob
    assert not _is_fp16(plain["795"])  # fp32 ncnn does not happen to produce halves


def test_differences_from_fp32_are_fp16_sized(feed, fp32, results):
    """Rounding each blob costs <= 2^-11 relative; ~60 layers deep it stays small.

    Measured on this photo: cls probabilities (<= 0.42 here) max 7.7e-4 abs,
    dis logits (|v| <= 6.7) max 9.5e-3 abs. A single fp16 ulp is 2^-12 at 0.4 and
    2^-8 at 5, so the bounds below are ~5x the measurement, yet an order of
    magnitude under what a real precision bug (lost bits, bf16) would cause.
    """
    plain, emulated = results
    # fp32 from the same rounded input, rounded only at the end: what the
    # emulation would give if intermediate blobs were not rounded.
    rounded_ends = {blob: fp16_round(v) for blob, v in fp32.infer(fp16_round(feed)).items()}
    for blob in CLS + DIS:
        diff = np.abs(plain[blob] - emulated[blob])
        assert diff.max() > 0, blob
        assert not np.array_equal(emulated[blob], rounded_ends[blob]), blob
        bound = 4e-3 if blob in CLS else 5e-2
        assert diff.max() < bound, (blob, float(diff.max()))
        assert diff.mean() < bound / 10, (blob, float(diff.mean()))
    for blob in CLS:
        assert emulated[blob].min() >= 0 and emulated[blob].max() <= 1


def test_first_layer_is_fp32_conv_of_rounded_input_then_rounded(feed):
    """Per-blob rounding: blob = round16(fp32 layer(rounded inputs))."""
    fp16 = Fp16EmulatedNcnnRunner(PARAM, WEIGHTS, INPUT, [FIRST_CONV, POOLED, BRANCH_CONV])
    emulated = fp16.infer(feed)
    plain = NcnnRunner(PARAM, WEIGHTS, INPUT, [FIRST_CONV])
    first = plain.infer(fp16_round(feed))[FIRST_CONV]
    assert not _is_fp16(first)
    # Same library, same kernels, same inputs: the fp32 arithmetic is identical.
    assert np.array_equal(emulated[FIRST_CONV], fp16_round(first))
    # The pool consumes the rounded conv output (max of halves is a half) ...
    assert _is_fp16(emulated[POOLED])
    # ... and the next conv sees the rounded pool: compute it in plain fp32 ncnn
    # from the emulated (rounded) pool output and round.
    extractor = plain.net.create_extractor()
    pooled = np.ascontiguousarray(emulated[POOLED])
    extractor.input(POOLED, ncnn.Mat(pooled))  # `pooled` outlives the extractor
    status, mat = extractor.extract(BRANCH_CONV)
    assert status == 0
    assert np.array_equal(emulated[BRANCH_CONV], fp16_round(np.array(mat)))


def test_feeding_an_intermediate_blob_overrides_it(feed, fp16, results):
    _, emulated = results
    # In ncnn itself: a zeroed first-conv blob fed by name changes the outputs.
    plain = NcnnRunner(PARAM, WEIGHTS, INPUT, CLS)
    zeros = np.zeros((24, 160, 160), np.float32)
    extractor = plain.net.create_extractor()
    extractor.input(INPUT, ncnn.Mat(np.ascontiguousarray(feed[0])))
    extractor.input(FIRST_CONV, ncnn.Mat(zeros).clone())
    status, mat = extractor.extract("792")
    assert status == 0
    assert np.abs(np.array(mat) - plain.infer(feed)["792"]).max() > 0.01
    # Through the runner, deep in the graph: zero the neck's stride-8 map on its
    # way into the stride-8 head. The stride-8 outputs change, so the fed blob
    # (normally the rounded one) is what the next layer reads; the other
    # levels read 733's other split copy and are bit-identical.
    substituted = Substituting(PARAM, WEIGHTS, INPUT, OUTPUTS, substitutes={
        "733_splitncnn_0": np.zeros((96, 40, 40), np.float32)})
    corrupted = substituted.infer(feed)
    assert np.abs(corrupted["792"] - emulated["792"]).max() > 0.01
    assert np.abs(corrupted["795"] - emulated["795"]).max() > 0.1
    for blob in ["814", "817", "836", "839"]:
        assert np.array_equal(corrupted[blob], emulated[blob]), blob
    misshapen = Substituting(PARAM, WEIGHTS, INPUT, OUTPUTS, substitutes={
        "733_splitncnn_0": np.zeros((96, 40), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        misshapen.infer(feed)


def test_layer_by_layer_without_rounding_is_plain_ncnn(feed, results):
    """The extract/feed-back machinery itself is exact: all differences are rounding."""
    plain, _ = results
    unrounded = Unrounded(PARAM, WEIGHTS, INPUT, OUTPUTS).infer(feed)
    for blob in OUTPUTS:
        assert np.array_equal(unrounded[blob], plain[blob]), blob


def test_deterministic(feed, fp16, results):
    _, first = results
    second = fp16.infer(feed.copy())
    for blob in OUTPUTS:
        assert np.array_equal(first[blob], second[blob]), blob


def test_the_input_is_rounded(feed):
    runner = Fp16EmulatedNcnnRunner(PARAM, WEIGHTS, INPUT, [FIRST_CONV])
    plain = NcnnRunner(PARAM, WEIGHTS, INPUT, [FIRST_CONV])
    assert not _is_fp16(feed)
    first = runner.infer(feed)[FIRST_CONV]
    assert np.array_equal(first, runner.infer(fp16_round(feed))[FIRST_CONV])
    assert not np.array_equal(first, fp16_round(plain.infer(feed)[FIRST_CONV]))


def test_runner_interface():
    runner = Fp16EmulatedNcnnRunner(PARAM, WEIGHTS, INPUT, OUTPUTS)
    assert runner.name == "ncnn-fp16"
    assert runner.output_names == OUTPUTS
    with pytest.raises(Exception, match="nope"):
        Fp16EmulatedNcnnRunner(PARAM, WEIGHTS, INPUT, ["nope"])


@pytest.mark.parametrize("stem, input_name, outputs, size", [
    ("nanodet_m", "input.1", ["792", "795", "814", "817", "836", "839"], (320, 320)),
    ("nanodet-plus-m_416", "data", ["output"], (416, 416))])
def test_cast_runner_gives_the_layer_by_layer_bits(stem, input_name, outputs, size):
    """The fast runner (Cast layers inside ncnn) equals the layer-by-layer emulation."""
    from parity.runners.ncnn_fp16 import Fp16CastNcnnRunner

    param, weights = REFERENCE_NCNN / f"{stem}.param", REFERENCE_NCNN / f"{stem}.bin"
    frame = cv2.resize(cv2.imread(str(IMAGES / "astronaut.jpg")), size).astype(np.float32)
    x = (frame - np.float32([103.53, 116.28, 123.675])) * np.float32([0.017429, 0.017507,
                                                                      0.017125])
    feed = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    slow = Fp16EmulatedNcnnRunner(param, weights, input_name, outputs).infer(feed)
    fast = Fp16CastNcnnRunner(param, weights, input_name, outputs).infer(feed)
    plain = NcnnRunner(param, weights, input_name, outputs).infer(feed)
    for blob in outputs:
        assert np.array_equal(slow[blob], fast[blob]), blob
        assert not np.array_equal(fast[blob], plain[blob])


def test_cast_runner_rounds_an_output_that_another_layer_reads(tmp_path):
    """An output blob read by a later layer reaches that layer rounded, as in the reference."""
    from parity.runners.ncnn_fp16 import Fp16CastNcnnRunner

    param = tmp_path / "chain.param"
    param.write_text("7767517\n3 3\n"
                     "Input            in       0 1 data 0=8 1=8 2=3\n"
                     "UnaryOp          exp      1 1 data first 0=7\n"
                     "UnaryOp          sqrt     1 1 first second 0=5\n")
    weights = tmp_path / "chain.bin"
    weights.write_bytes(b"")
    feed = np.random.default_rng(5).normal(size=(1, 3, 8, 8)).astype(np.float32)
    args = (param, weights, "data", ["first", "second"])
    fast, slow = Fp16CastNcnnRunner(*args).infer(feed), Fp16EmulatedNcnnRunner(*args).infer(feed)
    for blob in ("first", "second"):
        assert np.array_equal(fast[blob], slow[blob]), blob
    unrounded = np.sqrt(np.exp(fp16_round(feed)[0]))  # sqrt of the exact exp: differs
    assert not np.array_equal(fast["second"], fp16_round(unrounded))
