"""The terminal form of a drift from a baseline (parity/baseline.py): what the two runs were,
a table per stage, and one line per changed detection."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parity.detection_stats import class_name
from parity.report_types import Change, Check, DetectionRow, Drift

CHANGE_LINES_SHOWN = 20  # with `parity check --baseline`; `parity diff` prints them all


def _short_sha(sha: str | None) -> str:
    return sha[:12] if sha else "unknown"


def sides_line(drift: Drift) -> str:
    """Which runs were compared: the checkpoint case and the versions that changed."""
    before, after = drift.baseline, drift.current
    if drift.same_checkpoint:
        case = f"the same checkpoint ({_short_sha(after.checkpoint_sha256)})"
    else:
        case = (f"another checkpoint ({_short_sha(before.checkpoint_sha256)} -> "
                f"{_short_sha(after.checkpoint_sha256)}: a retrained model?)")
    versions = ", ".join(f"{name} {old or '-'} -> {new or '-'}"
                         for name, (old, new) in drift.changed_versions.items())
    folder = "" if before.manifest_sha256 == after.manifest_sha256 else ", another model folder"
    return (f"baseline {before.report} -> {after.report}: {case}{folder}; "
            f"{'versions changed: ' + versions if versions else 'same tool versions'}")


def _box_text(row: DetectionRow, names: Sequence[str]) -> str:
    x1, y1, x2, y2, score, label = row
    return (f"{class_name(label, names)} {score:.3f} "
            f"[{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}]")


def change_line(change: Change, names: Sequence[str], stages: str | None = None) -> str:
    """One changed detection: stage (or `stages`), image, kind, and before -> after."""
    where = f"{stages or change.stage} {change.image} {change.kind}:"
    if change.before is None:
        return f"{where} {_box_text(change.after, names)}"
    if change.after is None:
        return f"{where} {_box_text(change.before, names)}"
    return (f"{where} {_box_text(change.before, names)} -> {_box_text(change.after, names)} "
            f"(IoU {change.iou:.3f}, score {change.score_shift:+.3f}, "
            f"edge {change.edge_px:.1f} px)")


def change_lines(changes: list[Change], names: Sequence[str]) -> list[str]:
    """One line per change, by image; a change that several stages share as shown (the
    same kind and detections to the digits printed, as when the checkpoint itself
    changed) once, with their names."""
    stages: dict[tuple[str, ...], list[str]] = {}
    first: dict[tuple[str, ...], Change] = {}
    for change in changes:
        shown = [_box_text(row, names) if row is not None else "" for row in
                 (change.before, change.after)]
        key = (change.image, change.kind, *shown)
        stages.setdefault(key, []).append(change.stage)
        first.setdefault(key, change)
    keys = sorted(stages, key=lambda key: key[0])  # stable: stage order within an image
    return [change_line(first[key], names, ",".join(stages[key])) for key in keys]


def drift_table(drift: Drift, checks: list[Check], stage_names: Sequence[str]) -> Table:
    """One row per stage of the table: its drift figures and its baseline verdict."""
    failing = {c.stage for c in checks if c.check.startswith("baseline.") and not c.passed}
    table = Table(title=f"drift from {drift.baseline.report}", title_justify="left")
    for column in ("stage", "verdict", "images", "shown before->after", "new", "lost",
                   "relabelled", "min IoU", "max dscore", "max edge px"):
        table.add_column(column, no_wrap=True)
    others = [name for name in drift.not_compared if name not in stage_names]
    for name in [*stage_names, *others]:
        figures = drift.stages.get(name)
        if figures is None:
            reason = drift.not_compared.get(name, "not compared")
            table.add_row(name, "[dim]not compared[/]", "", escape(reason), *[""] * 6)
            continue
        verdict = "[red]DRIFT[/]" if name in failing else "[green]ok[/]"
        table.add_row(name, verdict, str(figures.images), f"{figures.before}->{figures.after}",
                      str(figures.new), str(figures.lost), str(figures.label_changes),
                      f"{figures.min_iou:.4g}", f"{figures.max_score_shift:.4g}",
                      f"{figures.max_edge_px:.4g}")
    return table


def print_drift_table(drift: Drift, checks: list[Check], stage_names: Sequence[str],
                      console: Console) -> None:
    """The runs compared and the drift table."""
    console.print(escape(sides_line(drift)))
    console.print(drift_table(drift, checks, stage_names))


def print_drift(drift: Drift, checks: list[Check], stage_names: Sequence[str],
                names: Sequence[str], console: Console,
                limit: int | None = CHANGE_LINES_SHOWN) -> None:
    """The runs compared, the drift table and up to `limit` change lines (None: all)."""
    print_drift_table(drift, checks, stage_names, console)
    lines = change_lines(drift.changes, names)
    shown = lines if limit is None else lines[:limit]
    for line in shown:
        console.print(escape(line), no_wrap=True, overflow="ellipsis")
    if len(shown) < len(lines):
        console.print(f"... and {len(lines) - len(shown)} more changes "
                      "(all in the JSON report's baseline.changes)")

