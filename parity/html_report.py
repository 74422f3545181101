"""The parity report as one self-contained HTML page, readable offline.

Verdict and header, the stage table, log-binned histograms of the detection
differences (inline SVG), and every image with the reference and stage boxes
drawn over it (embedded JPEG, CSS-only toggles). No scripts, no external URLs.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from parity.detection_stats import BANDS, band_of, class_name
from parity.drift_report import change_lines, sides_line
from parity.gate import evaluate
from parity.images import LazyFrames, PhotoFile, in_memory
from parity.report_types import (
    Band,
    BandValues,
    Check,
    DetectionRow,
    Gate,
    Pair,
    Record,
    Report,
    ShapeMismatchFigures,
    StageFailed,
    StageFigures,
    StageResult,
    StageRow,
    TensorFigures,
)
from parity.stage_registry import DEVICE_INPUT, JSON_LINES
from parity.summary import summarize
from parity.tolerance_types import DetectionLimits

MAX_WIDTH = 640
JPEG_QUALITY = 80
SYNTHETIC_PREFIX = "bundled+synthetic:"
FIRMWARE_MIN = BANDS["firmware"][0]
LIST_LIMIT = 12  # missing/extra detections listed per stage and image


# (values key, axis title, lowest decade, highest decade, tolerance key, value/limit as plotted)
METRICS = (("iou", "1 − IoU", -6, 0, "min_iou", lambda v: 1.0 - v),
           ("score_diff", "|Δ score|", -6, 0, "max_score_diff", lambda v: v),
           ("edge_px", "max edge error, px", -4, 3, "max_edge_px", lambda v: v))
BINS_PER_DECADE = 2
GAP_SLOTS = 2.5  # the ≈0 bin, then 1.5 bins of space before the first decade
CHART_W, CHART_H = 280, 118
TICK_FONT = 9  # px, as .hist .hx in CSS
LABEL_GAP = 4  # px at least between two tick labels

# Check name -> stage-table column it is shown in (tensor and input checks by prefix).
CHECK_COLUMNS = {"errors": "errors", "detections.matched_fraction": "matched",
                 "detections.label_changes": "matched", "detections.extra": "extra",
                 "detections.min_iou": "min_iou", "detections.max_score_diff": "score",
                 "detections.max_edge_px": "edge", "detections.ap50": "ap50"}

Frames = Mapping[str, np.ndarray]


class Slot(NamedTuple):
    """A stage that ran: its position in the stage table (CSS class s{index}) and colour."""

    index: int
    name: str
    colour: str


def esc(value: Any) -> str:
    """Any value as escaped HTML text (attribute-safe)."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> float:
    """A float from a report value (JSON writes inf/nan as strings)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any, digits: int = 4) -> str:
    """Floats to `digits` significant digits, None to nothing, the rest as str."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# ----------------------------------------------------------------------------- frames

def regenerate_frames(report: Report) -> Frames:
    """The report's camera frames again: the bundled+synthetic set, or its folder's photos."""
    source = report.images.source
    names = [r.image for r in report.records]
    if source.startswith(SYNTHETIC_PREFIX):
        from parity.synthetic import default_frames

        try:
            count = int(source[len(SYNTHETIC_PREFIX):])
        except ValueError:
            return {}
        return LazyFrames(in_memory(default_frames(count)))
    return LazyFrames([PhotoFile(Path(source) / name) for name in names])


def jpeg_data_uri(frame: np.ndarray) -> str:
    """At most MAX_WIDTH px wide, JPEG quality JPEG_QUALITY, as a data URI."""
    h, w = frame.shape[:2]
    if w > MAX_WIDTH:
        frame = cv2.resize(frame, (MAX_WIDTH, max(1, round(h * MAX_WIDTH / w))),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


# ----------------------------------------------------------------------------- header

def _flatten(data: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(name, version) pairs of the nested `tool` entry."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, key if key != "libraries" else "")
    elif prefix:
        yield prefix, data


def _header_rows(report: Report) -> list[tuple[str, str]]:
    """(label, text) lines of the header table."""
    checkpoint, folder, images = report.checkpoint, report.model_folder, report.images
    size = folder.input or {}
    source = f'{images.count} from {images.source}'
    if images.shard:
        source += f'  shard {images.shard}'
    if images.unreadable:
        source += f'  unreadable: {", ".join(images.unreadable)}'
    tools = "  ".join(f"{k} {v}" for k, v in _flatten(report.tool))
    model = folder.path
    if folder.layout:
        model += f'  layout {folder.layout}'
    if size:
        model += f'  input {size.get("width")}×{size.get("height")} {size.get("pixel_format", "")}'

    rows = [("checkpoint", f'{checkpoint.file}  sha256 {checkpoint.sha256 or ""}'),
            ("model folder", model), ("images", source), ("tools", tools or "—")]
    if report.blame:
        rows.append(("blame", report.blame.get("summary", "")))
    return rows


def header_html(report: Report) -> str:
    """Title, verdict banner and the run's provenance."""
    gate = report.gate
    if gate.passed:
        verdict = '<div class="verdict pass">PASS</div>'
    else:
        failing = ", ".join(gate.failing_stages)
        verdict = (f'<div class="verdict fail">FAIL <span>first failing stage: '
                   f'<b>{esc(gate.blamed_stage)}</b> (failing: {esc(failing)})</span></div>')
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                    for k, v in _header_rows(report))
    return (f'<header><h1>NanoDet → UnitV2 parity report</h1>{verdict}'
            f'<table class="meta">{cells}</table></header>')


# ----------------------------------------------------------------------------- stage table

def failing_columns(gate: Gate) -> set[tuple[str, str]]:
    """(stage, table column) of every failing check of a gate (a run's or one image's)."""
    return {(check.stage, CHECK_COLUMNS.get(check.check) or check.check.split(".")[0])
            for check in gate.checks if not check.passed}


def check_text(check: Check) -> str:
    """`stage: check = value (limit L)`."""
    return f"{check.stage}: {check.check} = {fmt(check.value)} (limit {fmt(check.limit)})"


def _worst_tensor(tensors: dict[str, TensorFigures | ShapeMismatchFigures]) -> tuple[str, str]:
    """(value, blob) of the largest max-abs difference over blobs."""
    worst_blob, worst = "", -1.0
    for blob, figures in tensors.items():
        if not isinstance(figures, TensorFigures):
            return "shape", blob
        value = number(figures.max_abs)
        value = math.inf if math.isnan(value) else value
        if value > worst:
            worst_blob, worst = blob, value
    return (fmt(worst), worst_blob) if worst_blob else ("", "")


def _inputs_cell(figures: StageFigures, stage: StageRow) -> str:
    if DEVICE_INPUT in stage.checks:
        diff = figures.input_max_diff if figures.input_max_diff is not None else 0.0
        return f"max Δ {fmt(number(diff), 3)}"
    return f"{fmt(number(figures.identical_input_fraction) * 100, 3)}% same"


def stage_row(report: Report, index: int, stage: StageRow,
              failing: set[tuple[str, str]], reference: str | None) -> str:
    """One row of the stage table; failing figures in red."""
    name = stage.name
    swatch = f'<span class="sw" style="background:{esc(stage.colour)}"></span>'
    lead = f"<td>{swatch}{esc(name)}</td><td>{esc(stage.layout)}</td>"
    if not stage.ran or name not in report.summary:
        reason = stage.reason or "not run"
        return f'<tr class="skipped">{lead}<td colspan="11">skipped: {esc(reason)}</td></tr>'
    figures = report.summary[name]
    band = figures.detections.bands["firmware"]
    tensor, blob = _worst_tensor(figures.tensors)
    bad = {column for s, column in failing if s == name}
    status = "reference" if name == reference else ("FAIL" if bad else "ok")
    error = f' title="{esc(figures.first_error)}"' if figures.first_error else ""
    cells = [("status", status), ("errors", figures.errors),
             ("matched", f'{band.matched}/{band.reference}'), ("extra", band.extra),
             ("min_iou", fmt(band.min_iou)), ("score", fmt(band.max_score_diff)),
             ("edge", fmt(band.max_edge_px)), ("ap50", fmt(figures.detections.ap50)),
             ("tensors", tensor), ("vs", figures.compared_with or ""),
             ("inputs", _inputs_cell(figures, stage))]
    body = "".join(f'<td class="{"bad" if key in bad or (key == "status" and bad) else ""}"'
                   f'{error if key == "errors" else ""}>{esc(value)}'
                   f'{f"<small>{esc(blob)}</small>" if key == "tensors" and blob else ""}</td>'
                   for key, value in cells)
    return f"<tr>{lead}{body}</tr>"


def stage_table(report: Report) -> str:
    """The terminal summary's table, and every failing check with its limit."""
    failing = failing_columns(report.gate)
    reference = next((s.name for s in report.stages if s.reference), None)
    head = ("stage", "layout", "status", "errors", "matched ≥0.4", "extra ≥0.4", "min IoU",
            "max |Δscore|", "max edge px", "AP50", "max |Δtensor| (blob)", "vs", "inputs")
    rows = "".join(stage_row(report, i, s, failing, reference)
                   for i, s in enumerate(report.stages))
    checks = [c for c in report.gate.checks if not c.passed]
    failed = "".join(f'<li><b>{esc(c.stage)}</b>: {esc(c.check)} = {esc(fmt(c.value))}'
                     f' (limit {esc(fmt(c.limit))})</li>' for c in checks)
    listing = f'<ul class="failed">{failed}</ul>' if checks else \
        f'<p class="okline">all {len(report.gate.checks)} checks pass</p>'
    return (f'<section><h2>Stages</h2><p class="note">Detection figures are for the firmware '
            f'band (reference score ≥ {FIRMWARE_MIN}); tensors are compared with the stage in '
            f'“vs”. Red cells fail a check.</p><div class="scroll"><table class="stages">'
            '<thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{rows}</tbody></table></div>{listing}</section>")


def baseline_section(report: Report, names: Sequence[str]) -> str:
    """The drift from the baseline (`--baseline`): the runs, a row per stage, the changes."""
    drift = report.baseline
    if drift is None:
        return ""
    failing = {c.stage for c in report.gate.checks
               if c.check.startswith("baseline.") and not c.passed}
    head = ("stage", "status", "images", "shown before→after", "new", "lost", "relabelled",
            "min IoU", "max |Δscore|", "max edge px")
    rows = []
    stage_names = [stage.name for stage in report.stages]
    for name in [*stage_names, *(n for n in drift.not_compared if n not in stage_names)]:
        figures = drift.stages.get(name)
        if figures is None:
            reason = drift.not_compared.get(name, "not compared")
            rows.append(f'<tr class="skipped"><td>{esc(name)}</td>'
                        f'<td colspan="9">{esc(reason)}</td></tr>')
            continue
        cells = ("DRIFT" if name in failing else "ok", figures.images,
                 f"{figures.before}→{figures.after}", figures.new, figures.lost,
                 figures.label_changes, fmt(figures.min_iou), fmt(figures.max_score_shift),
                 fmt(figures.max_edge_px))
        status = ' class="bad"' if name in failing else ""
        rows.append(f"<tr><td>{esc(name)}</td><td{status}>{esc(cells[0])}</td>"
                    + "".join(f"<td>{esc(v)}</td>" for v in cells[1:]) + "</tr>")
    changes = "".join(f"<li>{esc(line)}</li>" for line in change_lines(drift.changes, names))
    listing = f'<ul class="issues">{changes}</ul>' if changes else \
        '<p class="okline">no detection changed beyond the baseline limits</p>'
    return (f'<section><h2>Drift from the baseline</h2><p class="note">'
            f'{esc(sides_line(drift))}</p><div class="scroll"><table class="stages"><thead>'
            '<tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
            + f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{listing}</section>')


def ran_slots(report: Report) -> list[Slot]:
    """Stages that ran, in table order; the first is the reference."""
    return [Slot(i, s.name, esc(s.colour)) for i, s in enumerate(report.stages)
            if s.ran and s.name in report.summary]


# ----------------------------------------------------------------------------- histograms

def log_bins(values: list[Any], low: int, high: int) -> list[int]:
    """Counts: bin 0 below 10**low (zero included), then BINS_PER_DECADE per decade."""
    count = (high - low) * BINS_PER_DECADE
    bins = [0] * (count + 1)
    for raw in values:
        value = abs(number(raw))
        if math.isnan(value) or value >= 10.0 ** high:
            bins[-1] += 1
        elif value < 10.0 ** low:
            bins[0] += 1
        else:
            bins[1 + min(count - 1, int((math.log10(value) - low) * BINS_PER_DECADE))] += 1
    return bins


class Axis(NamedTuple):
    """Horizontal layout of a log-binned chart: the ≈0 bin, a gap, then two bins a decade."""

    left: float
    slot: float
    low: int

    def bin_x(self, index: int) -> float:
        """Left edge of bin `index` (0: the ≈0 bin)."""
        return self.left + (0 if index == 0 else GAP_SLOTS + index - 1) * self.slot

    def decade_x(self, decade: float) -> float:
        """Where 10**decade lies (fractional decades for a limit)."""
        return self.left + (GAP_SLOTS + (decade - self.low) * BINS_PER_DECADE) * self.slot


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(decade: int) -> str:
    """10**decade as a short label: 0.01 to 1000 as decimals, otherwise 10⁻⁶."""
    if -2 <= decade <= 3:
        return f"{10.0 ** decade:g}"
    return "10" + str(decade).translate(SUPERSCRIPT)


def text_width(text: str, font: float = TICK_FONT) -> float:
    """A generous estimate of a sans-serif label's width in px (≈ is wide)."""
    return sum(0.95 if char == "≈" else 0.66 for char in text) * font


def tick_labels(axis: Axis, high: int, width: float) -> list[tuple[float, str]]:
    """(centre x, text) of the ≈0 label and of the decade labels that fit: none crosses
    the chart's edges, and a label closer than LABEL_GAP px to the previous one is left out."""
    candidates = [(axis.left + axis.slot / 2, "≈0")]
    candidates += [(axis.decade_x(d), decade_label(d)) for d in range(axis.low, high + 1)]
    placed: list[tuple[float, str]] = []
    end = -math.inf
    for x, text in candidates:
        half = text_width(text) / 2
        x = min(max(x, half + 1), width - half - 1)
        if x - half >= end + LABEL_GAP:
            placed.append((x, text))
            end = x + half
    return placed


def histogram_svg(values: list[Any], title: str, low: int, high: int, limit: float | None,
                  colour: str) -> str:
    """A small bar chart of log-binned values; bins wholly beyond `limit` in red."""
    width, height, top, bottom, left, right = CHART_W, CHART_H, 24, 18, 8, 16
    bins = log_bins(values, low, high)
    axis = Axis(left, (width - left - right) / (GAP_SLOTS + len(bins) - 1), low)
    slot, plot_h, base = axis.slot, height - top - bottom, height - bottom
    peak = max(bins) or 1
    parts = [f'<text x="{left}" y="11" class="ht">{esc(title)}</text>']
    for i, n in enumerate(bins):
        x = axis.bin_x(i)
        lower = 0.0 if i == 0 else 10.0 ** (low + (i - 1) / BINS_PER_DECADE)
        fill = "#d62728" if limit is not None and i and lower >= limit else colour
        h = plot_h * n / peak
        if n:
            parts.append(f'<rect x="{x + 1:.1f}" y="{base - h:.1f}" width="{slot - 2:.1f}"'
                         f' height="{h:.1f}" fill="{fill}"><title>{n}</title></rect>'
                         f'<text x="{x + slot / 2:.1f}" y="{base - h - 2:.1f}" '
                         f'class="hn">{n}</text>')
    for decade in range(low, high + 1):
        x = axis.decade_x(decade)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 3}" '
                     f'class="tick"/>')
    parts += [f'<text x="{x:.1f}" y="{height - 4}" class="hx">{text}</text>'
              for x, text in tick_labels(axis, high, width)]
    if limit is not None and limit > 0:
        x = axis.decade_x(min(max(math.log10(limit), low), high))
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 2}" y2="{base}" '
                     f'class="limit"><title>limit {fmt(limit)}</title></line>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" '
                 f'class="axis"/>')
    if not values:
        parts.append(f'<text x="{width / 2}" y="{top + plot_h / 2}" class="empty">no matched '
                     f'pairs</text>')
    return (f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}">{"".join(parts)}</svg>')


def band_charts(values: BandValues, band: str, limits: DetectionLimits,
                colour: str) -> str:
    """The three charts of one stage and band; tolerances apply to the firmware band."""
    charts = []
    for key, title, low, high, tol, plotted in METRICS:
        limit = plotted(getattr(limits, tol)) if band == "firmware" else None
        label = f"{title} (limit {fmt(limit, 3)})" if limit is not None else title
        shown = [plotted(v) for v in getattr(values, key)]  # e.g. IoU is drawn as 1 - IoU
        charts.append(histogram_svg(shown, label, low, high, limit, colour))
    return f'<div class="hb h-{band}">{"".join(charts)}</div>'


def histograms(report: Report) -> str:
    """Per compared stage and band: 1−IoU, |Δscore| and edge error of matched pairs."""
    radios = "".join(f'<input type="radio" name="hband" id="hb-{band}" class="tog"'
                     f'{" checked" if band == "firmware" else ""}>' for band in BANDS)
    labels = "".join(f'<label for="hb-{band}">{band} ({lo:g}–{min(hi, 1):g})</label>'
                     for band, (lo, hi) in BANDS.items())
    rows = []
    for _, name, colour in ran_slots(report)[1:]:
        limits = report.tolerances.limits(name).detections
        bands = report.summary[name].detections.bands
        charts = "".join(band_charts(bands[band].values, band, limits, colour)
                         for band in BANDS)
        rows.append(f'<div class="hrow"><div class="hname"><span class="sw" style="background:'
                    f'{colour}"></span>{esc(name)}</div>{charts}</div>')
    return (f'<section class="hsec"><h2>Differences of matched detections</h2>{radios}'
            f'<div class="seg">score band: {labels}</div><p class="note">Log bins, two per '
            f'decade; “≈0” holds values below the first tick. The red line is the stage\'s '
            f'tolerance (firmware band), red bars lie wholly beyond it.</p>'
            f'<div class="hists">{"".join(rows)}</div></section>')


# ----------------------------------------------------------------------------- images

def report_class_names(report: Report, given: Sequence[str] | None) -> Sequence[str]:
    """`given`, else the report's own (model_folder.class_names)."""
    if given is not None:
        return given
    return report.model_folder.class_names or ()


def _box(row: DetectionRow) -> tuple[float, float, float, float]:
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


def _rect(row: DetectionRow, cls: str, tip: str = "") -> str:
    """A box in frame pixels, with a hover tip."""
    x1, y1, x2, y2 = _box(row)
    shape = (f'<rect class="{cls}" x="{x1:.1f}" y="{y1:.1f}" width="{max(x2 - x1, 0):.1f}" '
             f'height="{max(y2 - y1, 0):.1f}"')
    return f"{shape}><title>{esc(tip)}</title></rect>" if tip else f"{shape}/>"


def _tip(who: str, index: int, row: DetectionRow, names: Sequence[str]) -> str:
    return (f"{who} #{index}: {class_name(row[5], names)} (label {int(row[5])}) "
            f"score {float(row[4]):.3f}")


def _tag(x: float, y: float, text: str, font: float, bounds: tuple[int, int], cls: str) -> str:
    """A filled label with its text, kept inside the frame."""
    w, h = len(text) * font * 0.6 + font * 0.6, font * 1.3
    x = min(max(x, 0), bounds[0] - w)
    y = min(max(y, 0), bounds[1] - h)
    return (f'<g class="{cls}"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'class="tagbg"/><text x="{x + font * 0.3:.1f}" '
            f'y="{y + font:.1f}" font-size="{font:.1f}" class="tagtx">{esc(text)}</text></g>')


def stage_overlay(record: Record, slot: Slot, font: float,
                  names: Sequence[str]) -> tuple[str, str]:
    """(boxes, missing/extra markers) of one stage, all in class s{index}."""
    index, name, colour = slot
    entry = record.stages.get(name)
    if not isinstance(entry, StageResult):
        return "", ""
    reference, detections = record.reference or [], entry.detections
    size = record.frame_size
    boxes = "".join(_rect(row, f"b-{band_of(float(row[4]))}", _tip(name, j, row, names))
                    for j, row in enumerate(detections))
    marks = []
    for i in entry.match.missing:
        row = reference[i]
        band = band_of(float(row[4]))
        x1, y1, _, _ = _box(row)
        marks.append(_rect(row, f"miss b-{band}", "missing in " + _tip(name, i, row, names))
                     + _tag(x1, y1 + index * font * 1.35,
                            f"✕ missing {name}: {class_name(row[5], names)}", font, size,
                            f"b-{band}"))
    for j in entry.match.extra:
        row = detections[j]
        band = band_of(float(row[4]))
        x1, _, _, y2 = _box(row)
        marks.append(_rect(row, f"extra b-{band}", "extra " + _tip(name, j, row, names))
                     + _tag(x1, y2 - (index + 1) * font * 1.35,
                            f"+ extra {name}: {class_name(row[5], names)}", font, size,
                            f"b-{band}"))
    style = f'style="color:{colour}"'
    return (f'<g class="st s{index}" {style}>{boxes}</g>',
            f'<g class="mk s{index}" {style}>{"".join(marks)}</g>')


def frame_svg(record: Record, frame: np.ndarray | None, slots: list[Slot],
              names: Sequence[str] = ()) -> str:
    """The frame with reference (dashed) and per-stage boxes, in frame pixels."""
    w, h = record.frame_size
    font = 12.0 * w / min(w, MAX_WIDTH)
    if frame is not None:
        canvas = (f'<image href="{jpeg_data_uri(frame)}" x="0" y="0" width="{w}" height="{h}" '
                  f'preserveAspectRatio="none"/>')
    else:
        canvas = (f'<rect width="{w}" height="{h}" fill="#3a3a3a"/><text x="{w / 2}" '
                  f'y="{h / 2}" class="noimg" font-size="{font * 1.5:.1f}">image not found'
                  f'</text>')
    layers = [stage_overlay(record, slot, font, names) for slot in slots]
    reference = "".join(f'<g class="b-{band_of(float(row[4]))}">' + _rect(row, "u")
                        + _rect(row, "d", _tip("reference", i, row, names)) + "</g>"
                        for i, row in enumerate(record.reference or []))
    return (f'<svg class="frame" viewBox="0 0 {w} {h}" width="{min(w, MAX_WIDTH)}" '
            f'role="img" aria-label="{esc(record.image)}">{canvas}'
            + "".join(boxes for boxes, _ in layers) + f'<g class="ref">{reference}</g>'
            + "".join(marks for _, marks in layers) + "</svg>")


def _listing(rows: list[DetectionRow], indices: list[int], who: str,
             names: Sequence[str]) -> str:
    """Short list of detections (class, score), firmware band first and in bold."""
    ordered = sorted(indices, key=lambda k: -float(rows[k][4]))
    items = [f'<span class="{"fw" if float(rows[k][4]) >= FIRMWARE_MIN else "lo"}">'
             f'{who}#{k} {esc(class_name(rows[k][5], names))} {float(rows[k][4]):.2f}</span>'
             for k in ordered[:LIST_LIMIT]]
    if len(ordered) > LIST_LIMIT:
        items.append(f"… +{len(ordered) - LIST_LIMIT}")
    return " ".join(items)


class ImageVerdict(NamedTuple):
    """One image's figures per stage (as if the run held only it) and the gate on them."""

    figures: dict[str, StageFigures]
    gate: Gate

    def failing(self, stage: str | None = None) -> list[Check]:
        """Failing checks, of one stage or of all."""
        return [c for c in self.gate.checks
                if not c.passed and (stage is None or c.stage == stage)]


def image_verdict(report: Report, record: Record) -> ImageVerdict:
    """The gate's own checks and limits (parity.gate.evaluate) on one image's figures."""
    figures = summarize([record], report.stages)
    return ImageVerdict(figures, evaluate(figures, report.tolerances, report.stages))


# A failing pair check -> how to find its worst firmware-band pair (smallest key first).
WORST_PAIR = {"detections.min_iou": lambda p: p.iou,
              "detections.max_score_diff": lambda p: -abs(p.score_diff),
              "detections.max_edge_px": lambda p: -p.edge_px}


def _pair_text(pair: Pair, record: Record, entry: StageResult, names: Sequence[str]) -> str:
    ref, found = (record.reference or [])[pair.ref], entry.detections[pair.stage]
    classes = class_name(ref[5], names)
    if not pair.same_label:
        classes += f" → {class_name(found[5], names)}"
    return (f"ref#{pair.ref}→#{pair.stage} {classes}: score {float(ref[4]):.3f}→"
            f"{float(found[4]):.3f}, IoU {float(pair.iou):.3f}, edge {float(pair.edge_px):.1f}px")


def failing_pairs(record: Record, entry: StageResult, failing: list[Check]) -> list[Pair]:
    """The firmware-band pairs behind failing pair checks: the worst pair of each, and
    every pair that changed class when label changes fail."""
    reference = record.reference or []
    pairs = [p for p in entry.match.pairs if float(reference[p.ref][4]) >= FIRMWARE_MIN]
    chosen: list[Pair] = []
    for check in failing:
        if check.check in WORST_PAIR and pairs:
            chosen.append(min(pairs, key=WORST_PAIR[check.check]))
        elif check.check == "detections.label_changes":
            chosen += [p for p in pairs if not p.same_label]
    return list({(p.ref, p.stage): p for p in chosen}.values())


def _issues(record: Record, entry: StageResult, failing: list[Check],
            names: Sequence[str]) -> str:
    """Failing checks with their worst pairs, then who is missing or extra."""
    match, parts = entry.match, []
    if failing:
        checks = "; ".join(f"{c.check} = {fmt(c.value)} (limit {fmt(c.limit)})"
                           for c in failing)
        parts.append(f'<div class="fails">fails {esc(checks)}</div>')
    parts += [f'<div class="fw">pair {esc(_pair_text(pair, record, entry, names))}</div>'
              for pair in failing_pairs(record, entry, failing)]
    if match.missing:
        parts.append('<div>missing: '
                     f'{_listing(record.reference or [], match.missing, "ref", names)}</div>')
    if match.extra:
        parts.append(f'<div>extra: {_listing(entry.detections, match.extra, "", names)}</div>')
    return "".join(parts)


def _band_cells(band: Band, bad: set[str]) -> str:
    """matched, min IoU, max |Δscore| and max edge cells; failing ones in red."""
    paired = band.matched > 0
    cells = [("matched", f"{band.matched}/{band.reference}"
              + (f" +{band.extra} extra" if band.extra else "")),
             ("min_iou", fmt(band.min_iou) if paired else ""),
             ("score", fmt(band.max_score_diff) if paired else ""),
             ("edge", fmt(band.max_edge_px, 3) if paired else "")]
    return "".join(f'<td class="{"bad" if column in bad else ""}">{esc(text)}</td>'
                   for column, text in cells)


def image_table(record: Record, slots: list[Slot], verdict: ImageVerdict,
                names: Sequence[str] = ()) -> str:
    """Per stage on one image: the firmware-band figures the gate checks (failing ones in
    red), failing checks with their worst pairs, and who is missing or extra."""
    columns = failing_columns(verdict.gate)
    rows = []
    for _, name, colour in slots:
        entry = record.stages.get(name)
        if entry is None:
            continue
        failing = verdict.failing(name)
        lead = (f'<td class="{"bad" if failing else ""}"><span class="sw" style="background:'
                f'{colour}"></span>{esc(name)}</td>')
        if isinstance(entry, StageFailed):
            rows.append(f'<tr>{lead}<td colspan="6" class="bad">error: {esc(entry.error)}'
                        f'</td></tr>')
            continue
        bad = {column for stage, column in columns if stage == name}
        if bad & {"extra", "ap50"}:
            bad.add("matched")
        shown = sum(float(r[4]) >= FIRMWARE_MIN for r in entry.detections)
        band = verdict.figures[name].detections.bands["firmware"]
        rows.append(f'<tr>{lead}<td>{shown}/{len(entry.detections)}</td>'
                    f'{_band_cells(band, bad)}'
                    f'<td class="issues">{_issues(record, entry, failing, names)}</td></tr>')
    return ('<table class="per"><thead><tr><th>stage</th><th>dets ≥0.4/all</th>'
            '<th>matched ≥0.4</th><th>min IoU</th><th>max |Δscore|</th><th>max edge px</th>'
            '<th>failing checks · missing / extra (class, score)</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def image_badge(record: Record, slots: list[Slot], verdict: ImageVerdict) -> str:
    """FAIL (naming the stages) when the image's own figures fail a check of the gate;
    firmware-band missing/extra detections as a warning; lower-band ones dimmed."""
    failing = verdict.failing()
    missing = extra = below = 0
    for _, name, _ in slots[1:]:
        entry = record.stages.get(name)
        if isinstance(entry, StageResult):
            band = verdict.figures[name].detections.bands["firmware"]
            missing, extra = missing + band.missing, extra + band.extra
            below += len(entry.match.missing) + len(entry.match.extra) \
                - band.missing - band.extra
    badges = []
    if failing:
        stages = ", ".join(dict.fromkeys(c.stage for c in failing))
        tip = "\n".join(check_text(c) for c in failing)
        badges.append(f'<span class="badge fail" title="{esc(tip)}">FAIL {esc(stages)}</span>')
    counted = [f"{n} {what}" for n, what in ((missing, "missing"), (extra, "extra")) if n]
    if counted:
        badges.append(f'<span class="badge warn">{esc(", ".join(counted))} ≥0.4</span>')
    if not badges:
        badges.append('<span class="badge ok">ok</span>')
    if below:
        badges.append(f'<span class="badge dim">{below} unmatched &lt;0.4</span>')
    return " ".join(badges)


def json_lines_html(record: Record, stages: list[StageRow]) -> str:
    """What each stage with JSON lines (the device) printed for this image, when it ran."""
    parts = []
    for stage in stages:
        entry = record.stages.get(stage.name)
        lines = entry.json_lines if isinstance(entry, StageResult) \
            and JSON_LINES in stage.checks else None
        if lines:
            parts.append(f'<details class="jl" open><summary>{esc(stage.name)} JSON lines '
                         f'({len(lines)})</summary><pre>{esc(chr(10).join(lines))}</pre>'
                         '</details>')
    return "".join(parts)


def toggles(slots: list[Slot]) -> tuple[str, str]:
    """(checkbox inputs, legend labels): stages (the reference stage off), reference, bands."""
    inputs, labels = [], []
    for index, name, colour in slots:
        checked = "" if index == slots[0].index else " checked"
        inputs.append(f'<input type="checkbox" id="t-s{index}" class="tog"{checked}>')
        labels.append(f'<label for="t-s{index}"><span class="sw" style="background:{colour}">'
                      f'</span>{esc(name)}</label>')
    inputs.append('<input type="checkbox" id="t-ref" class="tog" checked>')
    labels.append('<label for="t-ref"><span class="sw refsw"></span>reference</label>')
    for band, (low, high) in BANDS.items():
        checked = " checked" if band == "firmware" else ""
        inputs.append(f'<input type="checkbox" id="t-{band}" class="tog"{checked}>')
        labels.append(f'<label for="t-{band}" class="bandl">scores {low:g}–{min(high, 1):g}'
                      f'</label>')
    return "".join(inputs), "".join(labels)


def _from_size(record: Record) -> str:
    """' (camera frame of a WxH photo)' when the photo was not 640x480 already."""
    original = record.original_size
    if not original or original == record.frame_size:
        return ""
    return f' <small>(camera frame of a {int(original[0])}x{int(original[1])} photo)</small>'


def images_section(report: Report, frames: Frames, names: Sequence[str] = ()) -> str:
    """Index with badges, the toggles and legend, then one card per image."""
    slots = ran_slots(report)
    if not slots:
        return '<section class="imgs"><h2>Images</h2><p>no stage ran</p></section>'
    inputs, labels = toggles(slots)
    index, cards, failed = [], [], 0
    for k, record in enumerate(report.records):
        verdict = image_verdict(report, record)
        failed += bool(verdict.failing())
        badge = image_badge(record, slots, verdict)
        index.append(f'<li id="idx-{k}"><a href="#img-{k}">{esc(record.image)}</a> {badge}</li>')
        frame = frames.get(record.image)
        found = "" if frame is not None else ' <span class="badge warn">image not found</span>'
        cards.append(f'<article id="img-{k}"><h3>{esc(record.image)}{_from_size(record)} '
                     f'{badge}{found}</h3><div class="card"><div class="pic">'
                     f'{frame_svg(record, frame, slots, names)}</div><div class="side">'
                     f'{image_table(record, slots, verdict, names)}'
                     f'{json_lines_html(record, report.stages)}</div></div></article>')
    tally = f"{failed} of {len(report.records)} images fail a check on their own figures"
    return (f'<section class="imgs"><h2>Images <small>{tally}</small></h2>'
            f'<ul class="index">{"".join(index)}</ul>'
            f'{inputs}<div class="legend">show: {labels}<span class="key">dashed white = '
            f'reference · thick dotted = missing in that stage · thick filled = extra · hover a '
            f'box for class and score</span></div><div class="frames">{"".join(cards)}</div>'
            f'</section>')


# ----------------------------------------------------------------------------- page

def page_css(stage_count: int) -> str:
    """Static styles plus the toggle rules for `stage_count` stage slots."""
    rules = [f"#t-s{i}:not(:checked)~.frames .s{i}{{display:none}}"
             f"#t-s{i}:not(:checked)~.legend label[for=t-s{i}]{{opacity:.4;"
             f"text-decoration:line-through}}" for i in range(stage_count)]
    rules += [f"#t-{band}:not(:checked)~.frames .b-{band}{{display:none}}"
              f"#t-{band}:checked~.legend label[for=t-{band}]{{background:#333;color:#fff}}"
              f"#hb-{band}:checked~.hists .h-{band}{{display:flex}}"
              f"#hb-{band}:checked~.seg label[for=hb-{band}]{{background:#333;color:#fff}}"
              for band in BANDS]
    rules.append(f".hist .hx{{font-size:{TICK_FONT}px}}")
    rules.append("#t-ref:not(:checked)~.frames .ref{display:none}"
                 "#t-ref:not(:checked)~.legend label[for=t-ref]{opacity:.4;"
                 "text-decoration:line-through}")
    return CSS + "".join(rules)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1400px;padding:12px 20px;color:#222;background:#fafafa}
h1{font-size:20px;margin:4px 0}h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}
.verdict{display:inline-block;font-size:22px;font-weight:700;padding:4px 14px;border-radius:4px;
margin:6px 0;color:#fff}.verdict span{font-size:14px;font-weight:400}
.pass{background:#2e7d32}.fail{background:#c62828}
table{border-collapse:collapse}td,th{padding:3px 8px;text-align:left;vertical-align:top}
.meta th{color:#666;font-weight:500}.meta td{font-family:ui-monospace,Menlo,monospace;
font-size:12px;word-break:break-all}
.stages{font-size:13px;background:#fff;border:1px solid #ddd}
.stages th{background:#eee;font-weight:600}.stages td{border-top:1px solid #eee;
font-variant-numeric:tabular-nums;white-space:nowrap}
.stages td small{display:block;color:#777;font-size:11px}
.stages tr.skipped td{color:#888;font-style:italic}
td.bad{background:#fde0e0;color:#a00;font-weight:600}
.failed li{color:#a00}.okline{color:#2e7d32}.note{color:#666;font-size:12px;margin:2px 0 8px}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
.refsw{background:repeating-linear-gradient(90deg,#fff 0 4px,#000 4px 7px);
border:1px solid #000}
.tog{position:absolute;opacity:0;pointer-events:none}
.seg label,.legend label{display:inline-block;border:1px solid #bbb;border-radius:3px;
padding:1px 8px;margin:2px 3px;cursor:pointer;user-select:none;background:#fff}
.legend{position:sticky;top:0;z-index:2;background:#fafafa;padding:4px 0;
border-bottom:1px solid #ddd}
.legend .key{color:#666;font-size:12px;margin-left:8px}
.hrow{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin:2px 0}
.hname{width:110px;font-weight:600;font-size:13px}
.hb{display:none;flex-wrap:wrap;gap:6px}
.hist{background:#fff;border:1px solid #e3e3e3}
.hist .ht{font-size:10px;fill:#333}.hist .hn{font-size:8px;fill:#333;text-anchor:middle}
.hist .hx{fill:#555;text-anchor:middle}.hist .axis,.hist .tick{stroke:#999}
.hist .limit{stroke:#d62728;stroke-width:1.5;stroke-dasharray:3 2}
.hist .empty{font-size:10px;fill:#aaa;text-anchor:middle}
.index{columns:3;font-size:13px;padding-left:18px}
.badge{font-size:11px;font-weight:500;padding:0 6px;border-radius:8px;white-space:nowrap}
.badge.ok{background:#e3f2e4;color:#2e7d32}.badge.warn{background:#fff0d6;color:#a35a00}
.badge.dim{background:#eee;color:#777}.badge.fail{background:#c62828;color:#fff;font-weight:700}
h2 small{font-size:12px;font-weight:400;color:#666}.issues .fails{color:#a00;font-weight:600}
.card{display:flex;gap:14px;flex-wrap:wrap;align-items:flex-start}
.pic{flex:0 0 auto;max-width:640px}.side{flex:1 1 420px;min-width:0}
svg.frame{display:block;max-width:100%;height:auto;background:#222}
.st rect,.ref rect,.mk .miss,.mk .extra{fill:none;stroke:currentColor;
vector-effect:non-scaling-stroke}
.st rect{stroke-width:1.5}
.ref .u{stroke:#000;stroke-width:3}.ref .d{stroke:#fff;stroke-width:1.5;stroke-dasharray:6 4}
.mk .miss{stroke-width:3.5;stroke-dasharray:2 3}
.mk .extra{stroke-width:3.5;fill:currentColor;fill-opacity:.15}
.tagbg{fill:currentColor;stroke:none}.tagtx{fill:#000;font-family:system-ui,sans-serif;
font-weight:600}.noimg{fill:#ccc;text-anchor:middle}
.per{font-size:12px;background:#fff;border:1px solid #ddd;width:100%}
.per th{background:#eee}.per td{border-top:1px solid #eee}
.per td:first-child,.stages td:first-child{white-space:nowrap}.scroll{overflow-x:auto}
.issues{font-family:ui-monospace,Menlo,monospace;font-size:11px}
.issues .fw{font-weight:700;color:#a00}.issues .lo{color:#888}
.jl summary{cursor:pointer;font-size:12px;color:#444;margin-top:6px}
.jl pre{font-size:11px;background:#f0f0f0;padding:6px;white-space:pre-wrap;
word-break:break-all;max-height:240px;overflow:auto;margin:4px 0}
footer{color:#999;font-size:11px;margin:30px 0 10px}
"""


def render_html(report: Report, frames: Frames,
                class_names: Sequence[str] | None = None) -> str:
    """The whole page as a string; detections are named by `class_names` (else the
    report's own, else `class N`)."""
    names = report_class_names(report, class_names)
    title = f'parity {"PASS" if report.gate.passed else "FAIL"}: {report.checkpoint.file}'
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{esc(title)}</title><style>{page_css(len(report.stages))}</style>'
            f'</head><body>{header_html(report)}{stage_table(report)}'
            f'{baseline_section(report, names)}{histograms(report)}'
            f'{images_section(report, frames, names)}<footer>{esc(report.schema)} v'
            f'{esc(report.schema_version)}</footer></body></html>\n')


def write_html(report: Report, path: Path, frames: Mapping[str, np.ndarray] | None,
               class_names: Sequence[str] | None = None) -> None:
    """Write the self-contained HTML report; frames are regenerated when None.

    Frames are looked up one image at a time (a LazyFrames decodes each on demand);
    `class_names` (the model folder's) name the detections' labels."""
    found: Frames = frames if frames is not None else regenerate_frames(report)
    Path(path).write_text(render_html(report, found, class_names), encoding="utf-8")
