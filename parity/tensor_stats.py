"""Tensor differences between two stages, kept in a form that merges exactly.

Per image and blob we keep sums and a fixed histogram of |a - b|, so that
shards merged give the same max / mean / p99 / cosine as one run
(parity.summary merges them).
"""

from __future__ import annotations

import numpy as np

# |diff| histogram: bin 0 holds exact zeros, then 10 bins per decade from 1e-9 to 1e3
ARGMAX_MIN_SCORE = 0.1  # class-argmax agreement counts cells scoring at least this
HIST_EDGES = np.concatenate([[0.0], np.logspace(-9, 3, 121)])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays hold the same values (shape, dtype, every element).

    A strided sample is compared first, so unequal blobs, the usual case, cost a
    fraction of a full comparison.
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    return bool(np.array_equal(flat_a[::61], flat_b[::61])) and bool(np.array_equal(a, b))


def _log_histogram(values: np.ndarray) -> np.ndarray:
    """Counts per HIST_EDGES bin of finite values >= 0 (np.histogram sorts: 10x slower)."""
    bins = values.astype(np.float32)  # binning only
    with np.errstate(divide="ignore"):
        np.log10(bins, out=bins)  # 0 -> -inf, clipped into bin 0 below
    bins += 9.0
    bins *= 10.0
    np.floor(bins, out=bins)
    bins += 1.0
    np.clip(bins, 0, len(HIST_EDGES) - 2, out=bins)
    return np.bincount(bins.astype(np.intp), minlength=len(HIST_EDGES) - 1)


def _sig(value: float) -> float:
    """12 significant digits: sums are stable far beyond that, last bits are not."""
    return float(f"{float(value):.12g}")


def tensor_record(reference: np.ndarray, stage: np.ndarray, class_columns: int | None) -> dict:
    """Mergeable difference figures of one blob on one image."""
    if reference.shape != stage.shape:
        return {"shape_mismatch": [list(reference.shape), list(stage.shape)]}
    a = reference.astype(np.float64).ravel()
    if same_bits(reference, stage) and np.isfinite(a).all():
        return _identical_record(a, reference, class_columns)
    b = stage.astype(np.float64).ravel()
    # named buffers and in-place ops: this runs on every blob of every stage and image
    diff = np.subtract(a, b)
    np.abs(diff, out=diff)
    max_abs = float(diff.max()) if a.size else 0.0  # nan or inf when any diff is
    scratch = np.abs(a)
    np.maximum(scratch, 1e-6, out=scratch)
    np.divide(diff, scratch, out=scratch)
    max_rel = float(scratch.max()) if a.size else 0.0
    finite = np.isfinite(diff)
    nonfinite = diff.size - int(np.count_nonzero(finite))
    if nonfinite:
        sum_abs = diff[finite].sum()
        diff[~finite] = HIST_EDGES[-1]  # counted in the last bin
    else:
        sum_abs = diff.sum()
    record = {
        "count": int(a.size), "max_abs": max_abs, "sum_abs": _sig(sum_abs),
        "nonfinite": nonfinite, "max_rel": max_rel,
        # np.sum (pairwise, no BLAS): the same bits in every process, so shards merge exactly
        "dot": _sig(np.sum(np.multiply(a, b, out=scratch))),
        "norm_ref": _sig(np.sum(np.multiply(a, a, out=scratch))),
        "norm_stage": _sig(np.sum(np.multiply(b, b, out=scratch))),
        "hist": _log_histogram(diff).astype(int).tolist(),
    }
    if class_columns and reference.ndim == 2:
        ref_cls, stage_cls = reference[:, :class_columns], stage[:, :class_columns]
        scored = ref_cls.max(1) >= ARGMAX_MIN_SCORE  # background cells' argmax is noise
        record["argmax_rows"] = int(scored.sum())
        record["argmax_agree"] = int((ref_cls[scored].argmax(1)
                                      == stage_cls[scored].argmax(1)).sum())
    return record


def _identical_record(a: np.ndarray, reference: np.ndarray, class_columns: int | None) -> dict:
    """`tensor_record` of a finite blob against an exact copy, without the arithmetic."""
    hist = np.zeros(len(HIST_EDGES) - 1, dtype=int)
    hist[0] = a.size
    norm = _sig(np.sum(np.multiply(a, a)))
    record = {"count": int(a.size), "max_abs": 0.0, "sum_abs": 0.0, "nonfinite": 0,
              "max_rel": 0.0, "dot": norm, "norm_ref": norm, "norm_stage": norm,
              "hist": hist.tolist()}
    if class_columns and reference.ndim == 2:
        scored = int((reference[:, :class_columns].max(1) >= ARGMAX_MIN_SCORE).sum())
        record["argmax_rows"] = record["argmax_agree"] = scored
    return record
