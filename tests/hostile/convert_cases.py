"""Hostile cases: `convert` outputs, paths and leftovers (see tests/hostile/harness.py).

Every refusal happens before any work, so these cases are fast; the few valid
cases run a full conversion with --no-verify.
"""

from __future__ import annotations

import json
import os
import shutil

from tests.hostile.harness import Case, Workspace

LONG_NAME = "x" * 250  # over NAME_MAX (255) once the partial's prefix and suffix are added
TAR_LONG_NAME = "t" * 230  # fits alone, not as <name>.tar.gz's partial


def convert_folder_at(name: str, extra: dict[str, bytes] | None = None):
    """Setup: a folder convert wrote (a copy of `unitv2`) at `name`, plus extra files."""

    def setup(ws: Workspace) -> None:
        shutil.copytree(ws["unitv2"], ws.root / name)
        for rel, content in (extra or {}).items():
            ws.file(f"{name}/{rel}", content)

    return setup


def inputs_in_folder(ws: Workspace) -> None:
    """Setup: a user's folder F holding the checkpoint and its config."""
    (ws.root / "F").mkdir()
    shutil.copy(ws["legacy.pth"], ws.root / "F" / "model.pth")
    shutil.copy(ws["legacy.yml"], ws.root / "F" / "model.yml")


def symlink(name: str, target: str, make_target=None):
    def setup(ws: Workspace) -> None:
        if make_target is not None:
            make_target(ws)
        os.symlink(target, ws.root / name)

    return setup


def make_dir(*names: str):
    def setup(ws: Workspace) -> None:
        for name in names:
            (ws.root / name).mkdir(parents=True)

    return setup


def decoy_partials(ws: Workspace) -> None:
    """Setup: a dead run's partial of another output and a user file that looks similar."""
    ws.file(".other.0123abcd.partial/model.onnx", b"another output's leftovers")
    ws.file(".out.notes.partial", "not a partial of ours (no 8-hex token)")
    ws.file(".out.0123abcd.partial.bak", "nor this")


def names_file(count: int, length: int):
    def setup(ws: Workspace) -> None:
        ws.file("names.txt", "\n".join(chr(97 + i % 26) * length for i in range(count)) + "\n")

    return setup


def fake_manifest(ws: Workspace) -> None:
    ws.file("out/manifest.json", json.dumps({"manifest_version": 1, "files": {}}))


def odd_manifest(ws: Workspace) -> None:
    """A marker, but `files` is not an object: only manifest.json itself is convert's."""
    ws.file("out/manifest.json", json.dumps({"written_by": "nanodet-unitv2 convert",
                                             "files": 5}))
    ws.file("out/model.param", "7767517\n")


def pth(ws: Workspace) -> str:
    return str(ws["plus.pth"])


CASES: list[Case] = [
    Case("convert-missing-checkpoint", "convert",
         lambda ws: [ws.root / "nope.pth", "-q"],
         mentions=lambda ws: [ws.root / "nope.pth", "no such checkpoint"]),

    # --force replaces only a folder convert wrote, never one holding an input
    Case("convert-force-folder-holding-checkpoint-and-config", "convert",
         lambda ws: ["F/model.pth", "--config", "F/model.yml", "-o", "F", "--force", "-q"],
         setup=inputs_in_folder,
         mentions=lambda ws: [ws.root / "F", "holds the checkpoint"]),
    Case("convert-force-convert-folder-holding-checkpoint", "convert",
         lambda ws: ["out/model.pth", "--legacy-head", "-o", "out", "--force", "-q"],
         setup=lambda ws: (convert_folder_at("out")(ws),
                           shutil.copy(ws["plus.pth"], ws.root / "out" / "model.pth")),
         mentions=lambda ws: [ws.root / "out", "holds the checkpoint"]),
    Case("convert-force-class-names-deep-below-output", "convert",
         lambda ws: [pth(ws), "--class-names", "out/a/b/names.txt", "-o", "out", "--force",
                     "-q"],
         setup=lambda ws: ws.file("out/a/b/names.txt", "cat\ndog\nbird\n"),
         mentions=lambda ws: [ws.root / "out", "holds the --class-names file"]),
    Case("convert-force-config-is-the-output", "convert",
         lambda ws: [ws["legacy.pth"], "--config", ws["legacy.yml"], "-o", ws["legacy.yml"],
                     "--force", "-q"],
         mentions=lambda ws: [ws["legacy.yml"], "is the --config file"]),
    Case("convert-output-is-the-checkpoint", "convert",
         lambda ws: [pth(ws), "-o", pth(ws), "--force", "-q"],
         mentions=lambda ws: [ws["plus.pth"], "is the checkpoint"]),
    Case("convert-force-dot-is-the-current-folder", "convert",
         lambda ws: [pth(ws), "-o", ".", "--force", "-q"],
         mentions=lambda ws: [ws.root, "is the current folder"]),
    Case("convert-force-parent-of-the-current-folder", "convert",
         lambda ws: [pth(ws), "-o", "..", "--force", "-q"],
         mentions=lambda ws: [ws.root.parent, "holds the current folder"]),
    Case("convert-root-has-no-name", "convert",
         lambda ws: [pth(ws), "-o", "/", "--force", "-q"],
         mentions=lambda ws: ["/: is not a folder name"]),
    Case("convert-force-user-folder", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=lambda ws: ws.file("out/notes.txt", "mine"),
         mentions=lambda ws: [ws.root / "out", "not written by convert"]),
    Case("convert-force-empty-folder-without-manifest", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=make_dir("out"),
         mentions=lambda ws: [ws.root / "out", "not written by convert"]),
    Case("convert-force-manifest-without-marker", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=fake_manifest,
         mentions=lambda ws: [ws.root / "out", "not written by convert"]),
    Case("convert-force-manifest-with-odd-files", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=odd_manifest,
         mentions=lambda ws: [ws.root / "out" / "model.param", "not written by convert"]),
    Case("convert-force-convert-folder-with-a-user-file", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=convert_folder_at("out", {"notes.txt": b"my notes"}),
         mentions=lambda ws: [ws.root / "out" / "notes.txt", "not written by convert"]),
    Case("convert-force-convert-folder-with-a-subfolder", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=convert_folder_at("out", {"data/keep.bin": b"\0" * 10}),
         mentions=lambda ws: [ws.root / "out" / "data", "not written by convert"]),

    # files, links and archives in the way
    Case("convert-force-over-a-file", "convert",
         lambda ws: [pth(ws), "-o", "out.bin", "--force", "-q"],
         setup=lambda ws: ws.file("out.bin", b"precious"),
         mentions=lambda ws: [ws.root / "out.bin", "not a folder"]),
    Case("convert-force-over-a-symlink-to-a-convert-folder", "convert",
         lambda ws: [pth(ws), "-o", "out", "--force", "-q"],
         setup=symlink("out", "real", convert_folder_at("real")),
         mentions=lambda ws: [ws.root / "out", "symbolic link"]),
    Case("convert-dangling-symlink-output", "convert",
         lambda ws: [pth(ws), "-o", "out", "-q"],
         setup=symlink("out", "nowhere"),
         mentions=lambda ws: [ws.root / "out", "symbolic link"]),
    Case("convert-tar-exists-without-force", "convert",
         lambda ws: [pth(ws), "-o", "out", "--tar", "-q"],
         setup=lambda ws: ws.file("out.tar.gz", b"an older archive"),
         mentions=lambda ws: [ws.root / "out.tar.gz", "use --force"]),
    Case("convert-tar-force-over-a-folder", "convert",
         lambda ws: [pth(ws), "-o", "out", "--tar", "--force", "-q"],
         setup=lambda ws: ws.file("out.tar.gz/inside.txt", "kept"),
         mentions=lambda ws: [ws.root / "out.tar.gz", "not a regular file"]),
    Case("convert-tar-force-over-a-symlink", "convert",
         lambda ws: [pth(ws), "-o", "out", "--tar", "--force", "-q"],
         setup=symlink("out.tar.gz", "inputs/plus.pth"),
         mentions=lambda ws: [ws.root / "out.tar.gz", "symbolic link"]),
    Case("convert-tar-would-replace-the-checkpoint", "convert",
         lambda ws: ["m.tar.gz", "-o", "m", "--tar", "--force", "-q"],
         setup=lambda ws: shutil.copy(ws["plus.pth"], ws.root / "m.tar.gz"),
         mentions=lambda ws: [ws.root / "m.tar.gz", "is the checkpoint"]),

    # where the output cannot go
    Case("convert-parent-missing", "convert",
         lambda ws: [pth(ws), "-o", "missing/out", "-q"],
         mentions=lambda ws: [ws.root / "missing", "does not exist"]),
    Case("convert-output-inside-a-file", "convert",
         lambda ws: [pth(ws), "-o", f"{pth(ws)}/out", "-q"],
         mentions=lambda ws: [ws["plus.pth"], "not a folder"]),
    Case("convert-output-name-too-long", "convert",
         lambda ws: [pth(ws), "-o", LONG_NAME, "-q"],
         mentions=lambda ws: ["name is too long"]),
    Case("convert-archive-name-too-long", "convert",
         lambda ws: [pth(ws), "-o", TAR_LONG_NAME, "--tar", "-q"],
         mentions=lambda ws: [TAR_LONG_NAME, "name is too long"]),
    Case("convert-output-name-not-utf8", "convert",
         lambda ws: [pth(ws), "-o", "caf\udce9", "-q"],
         mentions=lambda ws: ["-o", "not UTF-8"]),
    Case("convert-output-below-a-symlink-loop", "convert",
         lambda ws: [pth(ws), "-o", "loop/out", "-q"],
         setup=symlink("loop", "loop"),
         mentions=lambda ws: ["loop", "cannot be resolved"]),
    Case("convert-unwritable-location", "convert",
         lambda ws: [pth(ws), "-o", "/proc/nanodet-out", "-q"],
         mentions=lambda ws: ["/proc", "not writable"]),

    # options that would fail only after minutes of work
    Case("convert-input-size-absurd", "convert",
         lambda ws: [pth(ws), "--input-size", "100000x100000", "-q"],
         mentions=lambda ws: ["--input-size", "at most"]),
    Case("convert-class-names-too-long-for-model-json", "convert",
         lambda ws: [pth(ws), "--class-names", "names.txt", "--legacy-head", "-o", "out", "-q"],
         setup=names_file(3, 3000),
         mentions=lambda ws: ["names.txt", "model.json", "shorten the class names"]),

    # valid runs: only the output is added, decoys are left alone
    Case("convert-valid-tar-trailing-slash", "convert",
         lambda ws: [ws["legacy.pth"], "-o", "./out/", "--tar", "--no-verify", "-q"],
         exit_code=0, setup=decoy_partials, creates=("out", "out.tar.gz")),
    Case("convert-valid-through-a-symlinked-parent", "convert",
         lambda ws: [pth(ws), "--legacy-head", "-o", "link/out", "--no-verify", "-q"],
         exit_code=0, setup=symlink("link", "real", make_dir("real")),
         creates=("real/out",)),
]
