"""Tests for parity/unitv2/ through the UnitV2 target's device: the firmware's
preprocessing, decode and JSON line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from parity.targets import target_named
from parity.unitv2.arduinojson import format_float
from parity.unitv2.decode import (
    FirmwareObject,
    firmware_nms,
    firmware_sort_order,
    generate_proposals,
)
from parity.unitv2.geometry import Letterbox, letterbox_for, xyxy_boxes
from parity.unitv2.preprocess import resize_bilinear_c3

F32 = np.float32
IMAGES = sorted((Path(__file__).resolve().parents[1] / "parity" / "data" / "images").glob("*.jpg"))
DEVICE = target_named("unitv2").device
FRAME_W, FRAME_H = DEVICE.frame_size
MEAN_BGR, NORM_BGR = DEVICE.normalisation.mean_bgr, DEVICE.normalisation.norm_bgr
BOX = DEVICE.letterbox()


def from_frame(box: Letterbox, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Frame pixels -> net-input pixels (inverse of ``Letterbox.to_frame``), float32."""
    return xyxy_boxes(boxes_xyxy) * F32(box.scale) + box.pads()


def proposals(cls, dis, box):
    return generate_proposals(cls, dis, box, strides=DEVICE.strides,
                              score_threshold=DEVICE.score_threshold)


def nms(x, y, w, h):
    return firmware_nms(x, y, w, h, DEVICE.nms_iou)


# --------------------------------------------------------------------------- letterbox


def test_letterbox_640x480():
    box = DEVICE.letterbox(640, 480)
    assert box.scale == 0.5
    assert (box.net_w, box.net_h) == (320, 256)
    assert (box.resized_w, box.resized_h) == (320, 240)
    # hpad = 256 - 240 = 16 -> top 16 / 2 = 8, bottom the rest; no horizontal pad
    assert (box.pad_left, box.pad_right, box.pad_top, box.pad_bottom) == (0, 0, 8, 8)
    assert (box.frame_w, box.frame_h) == (640, 480)
    assert box == BOX


def test_letterbox_odd_pad_goes_to_right_bottom():
    # portrait: scale = 320 / 500 = 0.64f, w = int(333 * 0.64f) = 213, wpad = 224 - 213 = 11
    box = DEVICE.letterbox(333, 500)
    assert (box.net_w, box.net_h) == (224, 320)
    assert (box.resized_w, box.resized_h) == (213, 320)
    assert (box.pad_left, box.pad_right, box.pad_top, box.pad_bottom) == (5, 6, 0, 0)


def test_letterbox_rejects_bad_sizes():
    with pytest.raises(ValueError):
        DEVICE.letterbox(0, 480)


def test_letterbox_into_a_net_size():
    # the firmware's rule when it yields the asked size, else a centred fit-and-pad
    assert letterbox_for(640, 480, (320, 256)) == BOX
    square = letterbox_for(640, 480, (320, 320))
    assert (square.net_w, square.net_h, square.resized_w, square.resized_h) == (320, 320, 320, 240)
    assert (square.pad_left, square.pad_top, square.pad_bottom, square.scale) == (0, 40, 40, 0.5)
    with pytest.raises(ValueError):
        letterbox_for(0, 480, (320, 320))


def test_to_frame_known_values_and_round_trip():
    net = np.array([[0, 8, 320, 248], [10.5, 20.25, 100, 200]], dtype=F32)
    frame = BOX.to_frame(net)
    np.testing.assert_array_equal(frame, [[0, 0, 640, 480], [21, 24.5, 200, 384]])
    np.testing.assert_array_equal(from_frame(BOX, frame), net)
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, 1280, (50, 4)).astype(F32) / 2  # exact in float32 at this scale
    np.testing.assert_array_equal(BOX.to_frame(from_frame(BOX, boxes)), boxes)
    with pytest.raises(ValueError):
        BOX.to_frame(np.zeros((3, 5)))


# --------------------------------------------------------------------------- preprocessing


def _frames() -> list[tuple[str, np.ndarray]]:
    out = []
    for path in IMAGES:
        img = cv2.imread(str(path))
        assert img is not None, path
        out.append(
            (path.stem, cv2.resize(img, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA))
        )
    rng = np.random.default_rng(1)
    out.append(("noise", rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)))
    return out


def test_preprocess_numpy_shape_and_pad_value():
    frame = _frames()[0][1]
    t = DEVICE.preprocess(frame, BOX)
    assert t.shape == (1, 3, 256, 320) and t.dtype == np.float32
    pad_value = -np.array(MEAN_BGR, F32) * np.array(NORM_BGR, F32)
    for c in range(3):
        assert np.all(t[0, c, :8, :] == pad_value[c])
        assert np.all(t[0, c, 248:, :] == pad_value[c])
    # inside the pad band the picture is present (not the pad value everywhere)
    assert not np.all(t[0, :, 8:248, :] == pad_value[:, None, None])


def test_preprocess_rejects_wrong_frame():
    with pytest.raises(ValueError):
        DEVICE.preprocess(np.zeros((480, 640), np.uint8), BOX)
    with pytest.raises(ValueError):
        DEVICE.preprocess(np.zeros((480, 640, 3), np.float32), BOX)


@pytest.mark.parametrize("name,frame", _frames(), ids=lambda v: v if isinstance(v, str) else "")
def test_preprocess_numpy_matches_ncnn(name, frame):
    ncnn = pytest.importorskip("ncnn")
    # 1. the resize is ncnn's integer bilinear, reproduced bit for bit
    mat = ncnn.Mat.from_pixels_resize(frame, ncnn.Mat.PixelType.PIXEL_BGR, 640, 480, 320, 240)
    ncnn_resized = np.array(mat).transpose(1, 2, 0)
    np.testing.assert_array_equal(ncnn_resized, resize_bilinear_c3(frame, 320, 240))

    # 2. the normalised tensor: the only difference allowed is the rounding of
    #    x * norm + bias. The firmware (armv7 NEON vmla) rounds twice, like the numpy path;
    #    the pip build on an FMA-capable x86 fuses it. Both are within 1 ulp (2.4e-7 for
    #    |v| < 4), and ncnn equals one of the two roundings exactly.
    ours = DEVICE.preprocess(frame, BOX)[0]
    theirs = np.array(DEVICE.preprocess_ncnn(frame, BOX))
    assert theirs.shape == (3, 256, 320)
    diff = float(np.abs(ours - theirs).max())
    print(f"{name}: max |numpy - ncnn| = {diff:.3g}")
    assert diff <= 2.5e-7
    raw = np.zeros((3, 256, 320))
    raw[:, 8:248, :] = ncnn_resized.transpose(2, 0, 1)
    norm = np.array(NORM_BGR, F32).astype(np.float64)[:, None, None]
    bias = (-np.array(MEAN_BGR, F32) * np.array(NORM_BGR, F32)).astype(np.float64)[
        :, None, None
    ]
    fused = (raw * norm + bias).astype(F32)
    assert np.array_equal(theirs, ours) or np.array_equal(theirs, fused)


# --------------------------------------------------------------------------- decode helpers


def empty_levels(num_class: int = 2, bins: int = 8, box: Letterbox = BOX):
    cls, dis = [], []
    for s in DEVICE.strides:
        n = (box.net_h // s) * (box.net_w // s)
        cls.append(np.zeros((n, num_class), F32))
        dis.append(np.zeros((n, 4 * bins), F32))
    return cls, dis


def put(cls, dis, level: int, i: int, j: int, label: int, prob: float, ltrb, box=BOX):
    """Set cell (row i, col j) of a level: one class prob and peaked l, t, r, b logits.

    ``ltrb`` entries are a bin index or a tuple of bins sharing the mass equally.
    """
    gw = box.net_w // DEVICE.strides[level]
    row = i * gw + j
    cls[level][row, :] = 0
    cls[level][row, label] = prob
    bins = dis[level].shape[1] // 4
    logits = np.zeros((4, bins), F32)
    for side, b in enumerate(ltrb):
        for k in b if isinstance(b, tuple) else (b,):
            logits[side, k] = 50.0
    dis[level][row] = logits.reshape(-1)


# --------------------------------------------------------------------------- decode


def test_peaked_cell_decodes_to_exact_frame_box():
    cls, dis = empty_levels()
    # stride 16, cell row 5 col 7: centre (120, 88); l, t, r, b = 2, 1, 3, 4 bins * 16
    put(cls, dis, 1, 5, 7, label=1, prob=0.9, ltrb=(2, 1, 3, 4))
    objs = DEVICE.decode(cls, dis, BOX)
    # net box (88, 72, 168, 152) -> frame ((88-0)*2, (72-8)*2, (168-0)*2, (152-8)*2)
    assert objs == [
        FirmwareObject(
            prob=float(F32(0.9)),
            x=176,
            y=128,
            w=160,
            h=160,
            label=1,
            x1=176.0,
            y1=128.0,
            x2=336.0,
            y2=288.0,
        )
    ]


def test_expectation_between_bins():
    cls, dis = empty_levels()
    # stride 8, row 10 col 20: centre (164, 84); each side 1.5 bins * 8 = 12
    put(cls, dis, 0, 10, 20, label=0, prob=0.8, ltrb=((1, 2),) * 4)
    (obj,) = DEVICE.decode(cls, dis, BOX)
    assert (obj.x1, obj.y1, obj.x2, obj.y2) == (304.0, 128.0, 352.0, 176.0)
    assert (obj.x, obj.y, obj.w, obj.h) == (304, 128, 48, 48)


def test_clip_and_truncation():
    cls, dis = empty_levels()
    # stride 32, row 0 col 0: centre (16, 16); l = t = 7 bins * 32 = 224 -> clipped to 0;
    # r = b = 0.5 bin * 32 = 16 -> (32 - 0) * 2 = 64 and (32 - 8) * 2 = 48
    put(cls, dis, 2, 0, 0, label=0, prob=0.95, ltrb=(7, 7, (0, 1), (0, 1)))
    # bottom-right cell: right/bottom edges beyond the frame clip to 639 / 479
    put(cls, dis, 2, 7, 9, label=1, prob=0.85, ltrb=(1, 1, 7, 7))
    a, b = DEVICE.decode(cls, dis, BOX)
    assert (a.x1, a.y1, a.x2, a.y2, a.w, a.h) == (0.0, 0.0, 64.0, 48.0, 64, 48)
    # centre (304, 240): x0 = 272 -> 544, y0 = 208 -> 400; x1, y1 clipped
    assert (b.x1, b.y1, b.x2, b.y2, b.w, b.h) == (544.0, 400.0, 639.0, 479.0, 95, 79)


def test_threshold_is_inclusive_at_0_4():
    at = F32(0.4)
    below = np.nextafter(at, F32(0))
    cls, dis = empty_levels()
    put(cls, dis, 0, 3, 3, label=0, prob=at, ltrb=(1, 1, 1, 1))
    put(cls, dis, 0, 20, 30, label=1, prob=below, ltrb=(1, 1, 1, 1))
    objs = DEVICE.decode(cls, dis, BOX)
    assert [o.prob for o in objs] == [float(at)]
    assert DEVICE.decode(cls, dis, BOX, score_threshold=0.41) == []


def test_nms_suppresses_overlap_across_classes_and_keeps_disjoint():
    cls, dis = empty_levels(num_class=3)
    put(cls, dis, 0, 10, 10, label=0, prob=0.9, ltrb=(3, 3, 3, 3))  # net (60, 60, 108, 108)
    put(cls, dis, 0, 10, 11, label=1, prob=0.8, ltrb=(3, 3, 3, 3))  # shifted 8: IoU 40/56
    put(cls, dis, 0, 25, 30, label=2, prob=0.7, ltrb=(3, 3, 3, 3))  # far away
    objs = DEVICE.decode(cls, dis, BOX)
    assert [(o.label, o.prob) for o in objs] == [(0, float(F32(0.9))), (2, float(F32(0.7)))]


def test_nms_iou_of_exactly_half_is_kept():
    # 48x48 boxes 16 px apart: inter 32*48, union 2*48*48 - 32*48 -> IoU exactly 0.5,
    # and the firmware drops only when IoU > 0.5 (no +1 in widths)
    cls, dis = empty_levels()
    put(cls, dis, 0, 10, 10, label=0, prob=0.9, ltrb=(3, 3, 3, 3))
    put(cls, dis, 0, 10, 12, label=0, prob=0.8, ltrb=(3, 3, 3, 3))
    assert len(DEVICE.decode(cls, dis, BOX)) == 2
    assert len(replace(DEVICE, nms_iou=0.49).decode(cls, dis, BOX)) == 1


def test_nms_iou_formula_on_plain_boxes():
    ten = [10, 10]
    # B inside A (10x10), height h: IoU = 10h / 100 exactly
    assert nms([0, 0], [0, 0], ten, [10, 5]).tolist() == [0, 1]  # 0.5: kept
    assert nms([0, 0], [0, 0], ten, [10, 5.0001]).tolist() == [0]  # no +1 in union
    # boxes sharing an edge do not intersect
    assert nms([0, 10], [0, 0], ten, ten).tolist() == [0, 1]
    # only kept boxes suppress: C overlaps B (IoU 7/13) but B was removed by A; C vs A is 4/16
    assert nms([0, 3, 6], [0, 0, 0], [10] * 3, [10] * 3).tolist() == [0, 2]


def test_levels_are_concatenated_8_16_32():
    cls, dis = empty_levels()
    put(cls, dis, 2, 1, 1, label=0, prob=0.6, ltrb=(1, 1, 1, 1))
    put(cls, dis, 0, 30, 1, label=0, prob=0.6, ltrb=(1, 1, 1, 1))
    props = proposals(cls, dis, BOX)
    assert props.level.tolist() == [0, 2]
    assert props.x.tolist() == [4.0, 16.0]  # (1.5 * 8 - 8, 1.5 * 32 - 32)


def test_equal_scores_follow_the_firmware_quicksort():
    # hand-run of qsort_descent_inplace: [.5, .7, .5, .7] -> permutation [3, 1, 0, 2]
    # (a stable sort would give [1, 3, 0, 2]); three equal scores come out reversed
    assert firmware_sort_order(np.array([0.5, 0.7, 0.5, 0.7], F32)).tolist() == [3, 1, 0, 2]
    assert firmware_sort_order(np.array([0.5, 0.5, 0.5], F32)).tolist() == [2, 1, 0]
    assert firmware_sort_order(np.array([0.2, 0.9, 0.5], F32)).tolist() == [1, 2, 0]
    cls, dis = empty_levels(num_class=3)
    for k, col in enumerate((5, 15, 25)):
        put(cls, dis, 0, 16, col, label=k, prob=0.5, ltrb=(1, 1, 1, 1))
    assert [o.label for o in DEVICE.decode(cls, dis, BOX)] == [2, 1, 0]


@pytest.mark.parametrize("bins", [8, 16])
def test_reg_max_inferred_from_dis_width(bins):
    cls, dis = empty_levels(bins=bins)
    assert dis[0].shape[1] == 4 * bins  # widths 32 and 64
    put(cls, dis, 1, 8, 10, label=0, prob=0.9, ltrb=(5, 5, 5, 5))  # centre (168, 136), 80 px
    (obj,) = DEVICE.decode(cls, dis, BOX)
    assert (obj.x1, obj.y1, obj.x2, obj.y2) == (176.0, 96.0, 496.0, 416.0)
    if bins == 16:  # bin 12 exists only with reg_max 15: centre (248, 136), l = 192 px
        put(cls, dis, 1, 8, 10, label=0, prob=0.0, ltrb=(0, 0, 0, 0))
        put(cls, dis, 1, 8, 15, label=0, prob=0.9, ltrb=(12, 5, 2, 5))
        (obj,) = DEVICE.decode(cls, dis, BOX)
        assert (obj.x1, obj.y1, obj.x2, obj.y2) == (112.0, 96.0, 560.0, 416.0)


def test_wrong_shapes_raise():
    cls, dis = empty_levels()
    with pytest.raises(ValueError, match="expected 3 cls and dis levels"):
        DEVICE.decode(cls[:2], dis[:2], BOX)
    with pytest.raises(ValueError, match="rows"):
        DEVICE.decode([cls[0][:-1], cls[1], cls[2]], dis, BOX)
    with pytest.raises(ValueError, match="rows"):
        DEVICE.decode(cls, [dis[0], dis[1][:-5], dis[2]], BOX)
    with pytest.raises(ValueError, match="4 \\* \\(reg_max \\+ 1\\)"):
        DEVICE.decode(cls, [d[:, :30] for d in dis], BOX)
    with pytest.raises(ValueError, match="differ from level 0"):
        DEVICE.decode([cls[0], cls[1][:, :1], cls[2]], dis, BOX)
    # reg_max is read per level, as generate_proposals does: a wider level decodes
    DEVICE.decode(cls, [dis[0], np.zeros((dis[1].shape[0], 64), F32), dis[2]], BOX)
    with pytest.raises(ValueError, match="2-D"):
        DEVICE.decode([c.reshape(-1) for c in cls], dis, BOX)
    with pytest.raises(ValueError, match="not divisible"):
        replace(DEVICE, strides=(8, 16, 48)).decode(cls, dis, BOX)


def test_leading_unit_axes_are_accepted():
    cls, dis = empty_levels()
    put(cls, dis, 1, 5, 7, label=1, prob=0.9, ltrb=(2, 1, 3, 4))
    expected = DEVICE.decode(cls, dis, BOX)
    assert DEVICE.decode([c[None] for c in cls], [d[None, None] for d in dis], BOX) == expected
    with pytest.raises(ValueError, match="2-D"):
        DEVICE.decode([np.stack([c, c]) for c in cls], dis, BOX)


def test_no_detections():
    cls, dis = empty_levels()
    assert DEVICE.decode(cls, dis, BOX) == []
    assert DEVICE.json_line([], ["a"]) is None


def test_thousands_of_candidates():
    rng = np.random.default_rng(3)
    cls, dis = [], []
    for s in DEVICE.strides:
        n = (256 // s) * (320 // s)
        cls.append((rng.uniform(0, 1, (n, 80)) ** 10).astype(F32))
        dis.append(rng.normal(0, 3, (n, 32)).astype(F32))
    n_props = len(proposals(cls, dis, BOX).prob)
    objs = DEVICE.decode(cls, dis, BOX)
    assert n_props > 1000 and 0 < len(objs) < n_props
    probs = [o.prob for o in objs]
    assert probs == sorted(probs, reverse=True)
    for o in objs:
        assert 0 <= o.x1 <= o.x2 <= 639 and 0 <= o.y1 <= o.y2 <= 479
        assert (o.x, o.y) == (int(o.x1), int(o.y1))
        assert o.w == int(F32(o.x2) - F32(o.x1)) and o.h == int(F32(o.y2) - F32(o.y1))


# --------------------------------------------------------------------------- JSON


def test_json_line_exact():
    objs = [
        FirmwareObject(prob=0.87654321, x=176, y=128, w=160, h=160, label=1),
        FirmwareObject(prob=1.0, x=0, y=0, w=639, h=479, label=0),
    ]
    line = DEVICE.json_line(objs, ["person", 'dog "big"\\'])
    assert line == (
        '{"num":2,"obj":['
        '{"prob":0.876543224,"x":176,"y":128,"w":160,"h":160,"type":"dog \\"big\\"\\\\"},'
        '{"prob":1,"x":0,"y":0,"w":639,"h":479,"type":"person"}'
        '],"running":"Object Recognition"}'
    )
    assert json.loads(line)["obj"][0]["type"] == 'dog "big"\\'


def test_json_line_from_decode():
    cls, dis = empty_levels()
    put(cls, dis, 1, 5, 7, label=1, prob=0.9, ltrb=(2, 1, 3, 4))
    line = DEVICE.json_line(DEVICE.decode(cls, dis, BOX), ["cat", "dog"])
    assert line == (
        '{"num":1,"obj":[{"prob":0.899999976,"x":176,"y":128,"w":160,"h":160,"type":"dog"}],'
        '"running":"Object Recognition"}'
    )


def test_json_label_without_name_raises():
    with pytest.raises(ValueError, match="no class name"):
        DEVICE.json_line([FirmwareObject(prob=0.5, x=0, y=0, w=1, h=1, label=2)], ["a", "b"])


@pytest.mark.parametrize(
    "value,text",
    [
        (0.5, "0.5"),
        (1.0, "1"),
        (float(F32(0.4)), "0.400000006"),
        (float(F32(0.1)), "0.100000001"),
        (float(F32(0.99999994)), "0.99999994"),
        (float(F32(1e-6)), "9.999999975e-7"),
        (12345679.0, "1.2345679e7"),
        (-0.25, "-0.25"),
        (float("nan"), "null"),
    ],
)
def test_format_float(value, text):
    assert format_float(value) == text


def _same_class(n: int) -> list[FirmwareObject]:
    return [FirmwareObject(prob=0.75, x=1, y=2, w=3, h=4, label=0) for _ in range(n)]


FULL = {"prob": 0.75, "x": 1, "y": 2, "w": 3, "h": 4, "type": "person"}


def test_json_pool_limit_keeps_running_up_to_96_objects():
    # 16384-byte pool, 24-byte slots: num + obj + 7 per object + "person\0" + running + its
    # 19-byte string -> 96 objects fit entirely
    line = DEVICE.json_line(_same_class(96), ["person"])
    assert line.endswith('"type":"person"}],"running":"Object Recognition"}')
    assert json.loads(line)["obj"] == [FULL] * 96


def test_json_pool_limit_97_objects_running_is_null():
    # 97 objects leave 33 bytes: the running slot fits, its string does not
    line = DEVICE.json_line(_same_class(97), ["person"])
    assert line.endswith('"type":"person"}],"running":null}')
    assert json.loads(line)["obj"] == [FULL] * 97


def test_json_pool_limit_truncates_120_objects():
    line = DEVICE.json_line(_same_class(120), ["person"])
    assert line.startswith('{"num":120,"obj":[{"prob":0.75,')
    # 97 full objects, then an element slot with no room for its members, no running key
    assert line.endswith('"type":"person"},{}]}')
    assert line.count('"prob"') == 97
    doc = json.loads(line)
    assert doc["num"] == 120 and doc["obj"] == [FULL] * 97 + [{}] and "running" not in doc


def test_json_pool_limit_counts_class_name_strings():
    # 20-byte distinct names: 168 + 21 bytes per object -> 86 full objects; the 87th
    # gets its element, prob and x slots (82 - 72 = 10 bytes left), nothing else
    objs = [FirmwareObject(prob=0.75, x=1, y=2, w=3, h=4, label=i) for i in range(120)]
    names = [f"class_name_{i:09d}" for i in range(120)]
    doc = json.loads(DEVICE.json_line(objs, names))
    assert len(doc["obj"]) == 87
    assert doc["obj"][85] == {**FULL, "type": names[85]}
    assert doc["obj"][86] == {"prob": 0.75, "x": 1}
    assert "running" not in doc
