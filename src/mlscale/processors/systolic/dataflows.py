"""Functional mode: operands really move through the PE grid, cycle by cycle.

Each cycle is one NumPy step over the whole grid (and over every fold at once: folds are independent
passes of the same hardware, so they are stacked on a leading axis and simulated side by side; the
cycle count reported is still the sequential one, folds one after another as SCALE-Sim runs them).
Registers shift one PE per cycle, so an operand entering the left edge at cycle t reaches column j
at cycle t + j: the skewed wavefront of Kung & Leiserson ("Systolic arrays (for VLSI)", 1978) and of
the TPU's matrix unit (Jouppi et al., "In-Datacenter Performance Analysis of a Tensor Processing
Unit", ISCA 2017).

Shapes: A is (M x K), B is (K x N), the product C = A @ B is (M x N); the array has R x C PEs.

- OS (output-stationary): PE (i, j) owns output C[i, j] of a fold. Row i of A enters the left edge
  skewed by i cycles, column j of B enters the top edge skewed by j cycles; each PE multiplies the
  pair that meets in it and adds to its own accumulator. The last pair meets PE (R-1, C-1) at cycle
  (K-1) + (R-1) + (C-1), so a fold takes K + R + C - 2 cycles: 3n - 2 for an n x n product on an
  n x n array.
- WS (weight-stationary, the TPU's): a R x C tile of B is first shifted down into the PEs (R cycles),
  then rows of A stream in from the left (skewed by row) and partial sums flow down the columns,
  leaving the bottom edge. A fold takes R + (M + R + C - 2) = 2R + C + M - 2 cycles.
- IS (input-stationary): the same machine with A^T held in the PEs and B^T streamed, i.e.
  C^T = B^T @ A^T on the WS datapath: 2R + C + N - 2 cycles a fold.

These per-fold counts are the ones SCALE-Sim's demand matrices have (its `systolic_compute_os/ws/is`
modules: T + R + C - 2 rows for OS, 2R + C + T - 2 for WS and IS), which `timing.py` uses in closed
form; tests check that functional and timing modes agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlscale.errors import MlscaleError
from mlscale.processors.systolic.array import check_dataflow


@dataclass
class FunctionalResult:
    """What a functional run produced.

    Attributes:
        product: the (M x N) matrix that left the array.
        cycles: total cycles, folds run one after another (fill and drain each fold).
        cycles_per_fold: cycles of one fold.
        n_folds: passes of the array needed to cover the GEMM.
        n_macs: multiply-accumulates performed on real (not padding) operand pairs; equals M*N*K.
        wavefront: (cycles_per_fold, R, C) booleans, PEs doing a real MAC at each cycle of the first
            fold (None unless asked for).
    """

    product: np.ndarray
    cycles: int
    cycles_per_fold: int
    n_folds: int
    n_macs: int
    wavefront: np.ndarray | None = None


def run_functional(
    A: np.ndarray, B: np.ndarray, rows: int, cols: int, dataflow: str = "os", record: bool = False
) -> FunctionalResult:
    """Multiply A @ B on a rows x cols systolic array, moving operands PE to PE each cycle.

    Args:
        A: (M x K) left operand (ifmap).
        B: (K x N) right operand (filter).
        rows, cols: array size in PEs.
        dataflow: "os", "ws" or "is".
        record: keep the first fold's per-cycle map of active PEs (for the wavefront picture).

    Returns:
        FunctionalResult; `product` equals A @ B exactly for integers.

    Raises:
        MlscaleError: mismatched or empty shapes, non-positive array size, unknown dataflow.

    Example:
        >>> import numpy as np
        >>> A = np.arange(6).reshape(2, 3); B = np.arange(12).reshape(3, 4)
        >>> r = run_functional(A, B, 2, 4, "os")
        >>> bool((r.product == A @ B).all()), r.cycles      # K + R + C - 2 = 3 + 2 + 4 - 2
        (True, 7)
    """
    dataflow = check_dataflow(dataflow)
    A, B = np.asarray(A), np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0] or 0 in A.shape or 0 in B.shape:
        raise MlscaleError(f"functional mode needs A (M x K) and B (K x N), got {A.shape} and {B.shape}")
    if rows <= 0 or cols <= 0:
        raise MlscaleError(f"array size must be positive, got {rows}x{cols}")
    dtype = np.result_type(A.dtype, B.dtype, np.int64)
    A, B = A.astype(dtype), B.astype(dtype)
    if dataflow == "os":
        return _output_stationary(A, B, rows, cols, record)
    if dataflow == "ws":
        return _stationary_operand(A, B, rows, cols, record)
    result = _stationary_operand(B.T, A.T, rows, cols, record)  # IS: C^T = B^T @ A^T, A^T held
    result.product = np.ascontiguousarray(result.product.T)
    return result


def _tiles(X: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Split X along `axis` into zero-padded tiles of `size`; the tile index becomes axis 0."""
    n_tiles = math.ceil(X.shape[axis] / size)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (0, n_tiles * size - X.shape[axis])
    Xp = np.pad(X, pad)
    if axis == 0:
        return Xp.reshape(n_tiles, size, Xp.shape[1])
    return Xp.reshape(Xp.shape[0], n_tiles, size).transpose(1, 0, 2)


def _skewed_stream(tiles: np.ndarray, n_cycles: int) -> tuple[np.ndarray, np.ndarray]:
    """Feed for an array edge and its validity mask: out[f, lane, t] = tiles[f, lane, t - lane] (0 outside).

    `tiles` is (F, lanes, T): lane `lane` of the edge sees its T operands delayed by `lane` cycles,
    the skew that lines up operands meeting in the same PE.
    """
    F, lanes, T = tiles.shape
    t = np.arange(n_cycles)[None, :] - np.arange(lanes)[:, None]  # (lanes, cycles)
    valid = (t >= 0) & (t < T)
    out = np.take_along_axis(tiles, np.broadcast_to(np.clip(t, 0, T - 1), (F, lanes, n_cycles)), axis=2)
    return out * valid, np.broadcast_to(valid, (F, lanes, n_cycles))


def _output_stationary(A: np.ndarray, B: np.ndarray, R: int, C: int, record: bool) -> FunctionalResult:
    M, K = A.shape
    N = B.shape[1]
    A_t = _tiles(A, 0, R)  # (Fm, R, K): rows of A for each row fold
    B_t = _tiles(B, 1, C).transpose(0, 2, 1)  # (Fn, C, K): columns of B for each column fold
    Fm, Fn = A_t.shape[0], B_t.shape[0]
    # SCALE-Sim order: for each column fold, every row fold (fold f = fc * Fm + fr)
    A_f = np.tile(A_t, (Fn, 1, 1))
    B_f = np.repeat(B_t, Fm, axis=0)
    F = Fm * Fn
    n_cycles = K + R + C - 2
    left, left_ok = _skewed_stream(A_f, n_cycles)  # (F, R, cycles)
    top, top_ok = _skewed_stream(B_f, n_cycles)  # (F, C, cycles)
    real_rows = (np.arange(Fm * R).reshape(Fm, R) < M)[np.arange(F) % Fm]  # (F, R)
    real_cols = (np.arange(Fn * C).reshape(Fn, C) < N)[np.arange(F) // Fm]  # (F, C)
    a = np.zeros((F, R, C), A.dtype)
    b = np.zeros((F, R, C), A.dtype)
    a_ok = np.zeros((F, R, C), bool)
    b_ok = np.zeros((F, R, C), bool)
    acc = np.zeros((F, R, C), A.dtype)
    n_macs = 0
    wave = np.zeros((n_cycles, R, C), bool) if record else None
    for t in range(n_cycles):
        # one cycle: every register hands its operand to the right / lower neighbour ...
        a[:, :, 1:] = a[:, :, :-1]
        b[:, 1:, :] = b[:, :-1, :]
        a_ok[:, :, 1:] = a_ok[:, :, :-1]
        b_ok[:, 1:, :] = b_ok[:, :-1, :]
        # ... the edges take the next skewed operands ...
        a[:, :, 0] = left[:, :, t]
        b[:, 0, :] = top[:, :, t]
        a_ok[:, :, 0] = left_ok[:, :, t] & real_rows
        b_ok[:, 0, :] = top_ok[:, :, t] & real_cols
        # ... and every PE multiplies what reached it into its stationary output.
        acc += a * b
        active = a_ok & b_ok
        n_macs += int(active.sum())
        if record:
            wave[t] = active[0]
    # acc[f] is the (R x C) output tile of fold f; drain it to its place in C
    out = acc.reshape(Fn, Fm, R, C).transpose(1, 2, 0, 3).reshape(Fm * R, Fn * C)[:M, :N]
    return FunctionalResult(out, F * n_cycles, n_cycles, F, n_macs, wave)


def _stationary_operand(X: np.ndarray, W: np.ndarray, R: int, C: int, record: bool) -> FunctionalResult:
    """X @ W with tiles of W held in the PEs (WS; IS calls it with X = B^T, W = A^T).

    X is (T x Kd), streamed from the left edge one row per cycle; W is (Kd x Nd), held R x C at a time.
    """
    T, Kd = X.shape
    Nd = W.shape[1]
    W_k = _tiles(W, 0, R)  # (Fk, R, Nd)
    Fk = W_k.shape[0]
    W_t = _tiles(W_k.reshape(Fk * R, Nd), 1, C)  # (Fn, Fk*R, C)
    Fn = W_t.shape[0]
    # SCALE-Sim order: for each column fold, every row fold (fold f = fc * Fk + fr)
    W_f = W_t.reshape(Fn, Fk, R, C).reshape(Fn * Fk, R, C)
    F = Fn * Fk
    X_k = _tiles(X.T, 0, R)  # (Fk, R, T): lane i carries column k0 + i of X
    X_f = np.tile(X_k, (Fn, 1, 1))
    rows_real = (np.arange(Fk * R).reshape(Fk, R) < Kd)[np.arange(F) % Fk]  # (F, R)
    cols_real = (np.arange(Fn * C).reshape(Fn, C) < Nd)[np.arange(F) // Fk]  # (F, C)
    # Phase 1, R cycles: the weight tile is shifted down into the grid one row per cycle.
    w = np.zeros((F, R, C), W.dtype)
    w_ok = np.zeros((F, R, C), bool)
    for t in range(R):
        w[:, 1:, :] = w[:, :-1, :]
        w_ok[:, 1:, :] = w_ok[:, :-1, :]
        w[:, 0, :] = W_f[:, R - 1 - t, :]
        w_ok[:, 0, :] = rows_real[:, R - 1 - t, None] & cols_real
    # Phase 2: rows of X stream in from the left (lane i skewed by i), partial sums flow down.
    n_stream = T + R + C - 2
    left, left_ok = _skewed_stream(X_f, n_stream)  # (F, R, cycles)
    x = np.zeros((F, R, C), X.dtype)
    x_ok = np.zeros((F, R, C), bool)
    psum = np.zeros((F, R, C), X.dtype)
    out = np.zeros((F, T, C), X.dtype)
    j = np.arange(C)
    n_macs = 0
    wave = np.zeros((R + n_stream, R, C), bool) if record else None
    for s in range(n_stream):
        x[:, :, 1:] = x[:, :, :-1]
        x_ok[:, :, 1:] = x_ok[:, :, :-1]
        x[:, :, 0] = left[:, :, s]
        x_ok[:, :, 0] = left_ok[:, :, s]
        # each PE adds its product to the partial sum arriving from the PE above
        psum[:, 1:, :] = psum[:, :-1, :]
        psum[:, 0, :] = 0
        psum += x * w
        active = x_ok & w_ok
        n_macs += int(active.sum())
        if record:
            wave[R + s] = active[0]
        # the bottom edge emits output row m = s - (R-1) - j of column j
        m = s - (R - 1) - j
        ok = (m >= 0) & (m < T)
        out[:, m[ok], j[ok]] = psum[:, R - 1, ok]
    # partial sums of the K folds add up in the output buffer (SCALE-Sim writes each fold's out)
    full = out.reshape(Fn, Fk, T, C).sum(axis=1)  # (Fn, T, C)
    product = full.transpose(1, 0, 2).reshape(T, Fn * C)[:, :Nd]
    n_cycles = R + n_stream
    return FunctionalResult(product, F * n_cycles, n_cycles, F, n_macs, wave)
