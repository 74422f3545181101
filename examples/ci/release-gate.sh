#!/usr/bin/env bash
# Pre-release gate: convert the release checkpoint (or take a folder already
# built), check it with `parity check`, and say whether it may ship.
#
# Usage: examples/ci/release-gate.sh [MODEL_DIR]
#   Without MODEL_DIR: convert CKPT into $RELEASE_DIR/model, then check it.
#   With MODEL_DIR: check that folder as it is (the one about to be released).
# Environment (defaults run as they are in this repository):
#   CKPT        checkpoint             [fixtures/nanodet-m_coco.pth]
#   CONFIG      its NanoDet config     [fixtures/nanodet-m.yml]
#   RELEASE_DIR model and reports      [build/release]
#   PROFILE     tolerance profile      [verify: convert's own limits]
#   SYNTHETIC   synthetic frames       [20; tests use fewer for CI time]
#   WORKERS     processes              [2]
#   BASELINE    the last release's parity.json (kept outside RELEASE_DIR): also
#               gate each stage's drift from it, on the same images  [none]
# Exit codes: 0 may ship; 1 parity failed (see $RELEASE_DIR/parity.html) or
# convert's verification failed; 2 bad input or a convert stage error;
# anything else (130 Ctrl-C, 143 SIGTERM) as the tool exited.
set -uo pipefail

CKPT=${CKPT:-fixtures/nanodet-m_coco.pth}
CONFIG=${CONFIG:-fixtures/nanodet-m.yml}
RELEASE_DIR=${RELEASE_DIR:-build/release}
PROFILE=${PROFILE:-verify}
SYNTHETIC=${SYNTHETIC:-20}
WORKERS=${WORKERS:-2}

say() { echo "release-gate: $*" >&2; }

if (( $# > 1 )); then
  say "usage: release-gate.sh [MODEL_DIR]"
  exit 2
fi

mkdir -p "$RELEASE_DIR" || exit 2
convert_status=0
if (( $# == 1 )); then
  model_dir=$1
else
  model_dir=$RELEASE_DIR/model
  # --force replaces only a folder that convert wrote (a previous gate run).
  convert "$CKPT" --config "$CONFIG" --legacy-head --force -o "$model_dir"
  convert_status=$?
  # 1: the folder is written but its verification failed; check it anyway
  # so the reports show why. Anything else: nothing to check.
  if (( convert_status != 0 && convert_status != 1 )); then
    say "convert exited $convert_status: not releasing"
    exit "$convert_status"
  fi
fi

baseline=()
if [[ -n "${BASELINE:-}" ]]; then
  baseline=(--baseline "$BASELINE")
fi

# --strict: a photo that cannot be read fails the gate instead of being skipped.
parity check "$CKPT" "$model_dir" --config "$CONFIG" --profile "$PROFILE" --strict \
  --synthetic "$SYNTHETIC" --workers "$WORKERS" "${baseline[@]}" \
  --json "$RELEASE_DIR/parity.json" --junit "$RELEASE_DIR/parity.xml" \
  --html "$RELEASE_DIR/parity.html"
parity_status=$?

if (( parity_status == 0 && convert_status == 0 )); then
  say "PASS: $model_dir may ship"
  exit 0
fi
if (( parity_status == 0 || parity_status == 1 )); then
  say "FAIL: do not release $model_dir (convert $convert_status, parity $parity_status; see $RELEASE_DIR/parity.html)"
  exit 1
fi
say "parity exited $parity_status: not releasing"
exit "$parity_status"
