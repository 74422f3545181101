"""Show that a change keeps behaviour: converted folders and parity reports, before and after.

    python scripts/compare_behaviour.py snapshot OUT [--source CHECKOUT]
    python scripts/compare_behaviour.py compare BEFORE AFTER

`snapshot` converts both real fixture checkpoints (NanoDet-Plus-m 416 with
--legacy-head, NanoDet-m) with the code of CHECKOUT (default: this one; give
a `git worktree` of an earlier commit to snapshot that), runs the bundled
`parity check` on each folder, and keeps the folders and JSON reports in OUT.
`compare` exits 0 when two snapshots agree: every file of the folders byte for
byte, except what records the run itself (manifest.json's tool versions and
stage timings; the reports' tool versions and the manifest hash), which is
compared with those keys left out. Differences are listed, one per line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"plus": ("nanodet-plus-m_416_coco.pth", "nanodet-plus-m_416.yml"),
          "legacy": ("nanodet-m_coco.pth", "nanodet-m.yml")}
RUN_KEYS = {"manifest.json": (("tool",), ("stage_seconds",)),
            "report": (("tool",), ("model_folder", "manifest_sha256"), ("timing",))}


def run(source: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, *args], cwd=source, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} exited with {done.returncode}")


def snapshot(out: Path, source: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    for name, (checkpoint, config) in MODELS.items():
        ckpt, cfg = ROOT / "fixtures" / checkpoint, ROOT / "fixtures" / config
        folder = out / name
        run(source, "-m", "convert", str(ckpt), "--config", str(cfg), "--legacy-head", "-o",
            str(folder), "-q")
        run(source, "-m", "parity", "check", str(ckpt), str(folder), "--config", str(cfg),
            "--json", str(out / f"{name}.report.json"), "-q")


def without(document: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """`document` less the keys at `paths` (those that describe the run, not the result)."""
    copy = json.loads(json.dumps(document))
    for path in paths:
        node = copy
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return copy


def json_differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{where}.{key}: only in {'after' if key in b else 'before'}")
            else:
                found += json_differences(a[key], b[key], f"{where}.{key}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_differences(x, y,
                                                                                 f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}"]


def compare(before: Path, after: Path) -> list[str]:
    found: list[str] = []
    for name in MODELS:
        files = sorted({p.name for p in (before / name).iterdir()}
                       | {p.name for p in (after / name).iterdir()})
        for file in files:
            a, b = before / name / file, after / name / file
            if not a.exists() or not b.exists():
                found.append(f"{name}/{file}: only in {'after' if b.exists() else 'before'}")
            elif file in RUN_KEYS:
                paths = RUN_KEYS[file]
                found += [f"{name}/{file}{d}" for d in json_differences(
                    without(json.loads(a.read_text()), paths),
                    without(json.loads(b.read_text()), paths))]
            elif hashlib.sha256(a.read_bytes()).digest() != hashlib.sha256(b.read_bytes()).digest():
                found.append(f"{name}/{file}: bytes differ")
        report = f"{name}.report.json"
        found += [f"{report}{d}" for d in json_differences(
            without(json.loads((before / report).read_text()), RUN_KEYS["report"]),
            without(json.loads((after / report).read_text()), RUN_KEYS["report"]))]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("snapshot", help="convert and check with one checkout's code")
    take.add_argument("out", type=Path)
    take.add_argument("--source", type=Path, default=ROOT)
    both = commands.add_parser("compare", help="list what differs between two snapshots")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "snapshot":
        snapshot(args.out, args.source.resolve())
        return
    differences = compare(args.before, args.after)
    for line in differences[:200]:
        print(line)
    print(f"{len(differences)} difference(s)" if differences else "identical")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
