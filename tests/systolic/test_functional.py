"""Functional mode against the reference: the product leaving the array equals A @ B."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscale.processors.systolic import DATAFLOWS, ArrayConfig, Layer, run_functional, time_layer

dims = st.integers(1, 12)
arr = st.integers(1, 6)


@settings(max_examples=60, deadline=None)
@given(M=dims, K=dims, N=dims, R=arr, C=arr, dataflow=st.sampled_from(DATAFLOWS), seed=st.integers(0, 2**16))
def test_product_equals_matmul_for_integers(M, K, N, R, C, dataflow, seed):
    rng = np.random.default_rng(seed)
    A = rng.integers(-100, 100, (M, K))
    B = rng.integers(-100, 100, (K, N))
    r = run_functional(A, B, R, C, dataflow)
    np.testing.assert_array_equal(r.product, A @ B)
    assert r.n_macs == M * N * K  # every MAC happens once, on real operands
    # the PE-by-PE schedule takes exactly the cycles timing mode computes in closed form
    t = time_layer(Layer.gemm("g", M, K, N), ArrayConfig(rows=R, cols=C, dataflow=dataflow))
    assert (r.cycles, r.n_folds) == (t.compute_cycles, t.n_folds)


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_product_matches_matmul_for_floats(dataflow):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((13, 9)), rng.standard_normal((9, 11))
    r = run_functional(A, B, 4, 5, dataflow)
    np.testing.assert_allclose(r.product, A @ B, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 16])
def test_square_os_product_is_the_3n_minus_2_wavefront(n):
    A = np.arange(n * n).reshape(n, n)
    r = run_functional(A, A.T, n, n, "os", record=True)
    assert r.cycles == 3 * n - 2
    # the last MAC happens in the bottom-right PE at the last cycle, the first in the top-left at 0
    assert r.wavefront[0, 0, 0] and r.wavefront[0].sum() == 1
    assert r.wavefront[-1, n - 1, n - 1] and r.wavefront[-1].sum() == 1
    # anti-diagonal wavefront: PE (i, j) is busy exactly at cycles i + j .. i + j + n - 1
    busy = r.wavefront.sum(axis=0)
    assert (busy == n).all()


def test_bad_shapes_raise_user_error():
    from mlscale.errors import MlscaleError

    with pytest.raises(MlscaleError):
        run_functional(np.ones((2, 3)), np.ones((4, 2)), 2, 2, "os")
    with pytest.raises(MlscaleError, match="dataflow"):
        run_functional(np.ones((2, 3)), np.ones((3, 2)), 2, 2, "xs")
