"""Timing mode: MAC count, folding coverage, 3n-2, and SCALE-Sim's own figures."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscale.errors import MlscaleError
from mlscale.processors.systolic import DATAFLOWS, ArrayConfig, Layer, fold_tiles, simulate, time_layer

# Figures printed by SCALE-Sim 3.0.0 (PyPI `scalesim`) for configs/scale.cfg (32x32, CALC mode) and the
# GEMM topology "a,8,8,8 / b,100,37,70 / c,5,90,33" (name, M, N, K), COMPUTE_REPORT.csv and
# DETAILED_ACCESS_REPORT.csv: (Total Cycles, Overall Util %, Mapping Efficiency %, Compute Util %,
# SRAM IFMAP Reads, SRAM Filter Reads, SRAM OFMAP Writes).
SCALESIM_32x32 = {
    ("os", 8, 8, 8): (69, 0.7246376811594203, 6.25, 0.7142857142857143, 64, 64, 128),
    ("os", 100, 37, 70): (1055, 23.97437796208531, 45.166015625, 23.951674952651512, 14000, 10360, 4212),
    ("os", 5, 90, 33): (284, 5.106321522887324, 14.6484375, 5.088404605263158, 495, 2970, 642),
    ("ws", 8, 8, 8): (101, 0.49504950495049505, 6.25, 0.37593984962406013, 64, 64, 64),
    ("ws", 100, 37, 70): (1163, 21.748038478073948, 42.15494791666667, 18.73553240740741, 14000, 2590, 11100),
    ("ws", 5, 90, 33): (593, 2.445523292580101, 48.33984375, 1.8592247596153844, 495, 2970, 900),
    ("is", 8, 8, 8): (101, 0.49504950495049505, 6.25, 0.37593984962406013, 64, 64, 64),
    ("is", 100, 37, 70): (1571, 16.099916454487587, 56.966145833333336, 13.010786394032921, 7000, 10360, 11100),
    ("is", 5, 90, 33): (367, 3.9514858651226157, 8.056640625, 3.3725472383720936, 165, 2970, 900),
}


@pytest.mark.parametrize("key", sorted(SCALESIM_32x32))
def test_matches_scalesim_figures(key):
    dataflow, M, N, K = key
    t = time_layer(Layer.gemm("g", M, K, N), ArrayConfig(rows=32, cols=32, dataflow=dataflow))
    total, overall, mapping, compute, ifmap, filt, ofmap = SCALESIM_32x32[key]
    assert t.scalesim_total_cycles == total
    assert t.compute_cycles == total + 1  # mlscale counts cycles; SCALE-Sim prints the last index
    assert t.scalesim_overall_util_pct == pytest.approx(overall)
    assert t.mapping_eff_pct == pytest.approx(mapping)
    assert t.scalesim_compute_util_pct == pytest.approx(compute)
    assert (t.ifmap_sram_reads, t.filter_sram_reads, t.scalesim_ofmap_sram_writes) == (ifmap, filt, ofmap)


@pytest.mark.parametrize("n", [1, 4, 16, 128, 256])
def test_square_os_gemm_takes_3n_minus_2_cycles(n):
    t = time_layer(Layer.gemm("sq", n, n, n), ArrayConfig(rows=n, cols=n, dataflow="os"))
    assert t.n_folds == 1
    assert t.compute_cycles == 3 * n - 2
    assert t.scalesim_total_cycles == 3 * n - 3


shape = st.integers(1, 300)


@settings(max_examples=200, deadline=None)
@given(M=shape, K=shape, N=shape, R=st.integers(1, 64), C=st.integers(1, 64), df=st.sampled_from(DATAFLOWS))
def test_mac_count_and_utilisation_bounds(M, K, N, R, C, df):
    t = time_layer(Layer.gemm("g", M, K, N), ArrayConfig(rows=R, cols=C, dataflow=df))
    assert t.macs == M * N * K
    assert 0 < t.compute_util_pct <= 100 and 0 < t.mapping_eff_pct <= 100
    assert t.compute_cycles >= t.macs / (R * C)  # no more than R*C MACs per cycle


@settings(max_examples=60, deadline=None)
@given(M=st.integers(1, 20), K=st.integers(1, 20), N=st.integers(1, 20), R=st.integers(1, 7),
       C=st.integers(1, 7), df=st.sampled_from(DATAFLOWS))
def test_folds_cover_every_mac_exactly_once(M, K, N, R, C, df):
    layer, array = Layer.gemm("g", M, K, N), ArrayConfig(rows=R, cols=C, dataflow=df)
    count = np.zeros((M, N, K), int)
    for m, n, k in fold_tiles(layer, array):
        count[m, n, k] += 1
    assert (count == 1).all()
    assert len(fold_tiles(layer, array)) == time_layer(layer, array).n_folds


def test_conv_is_lowered_by_im2col():
    # alexnet Conv1: 224x224x3 input, 11x11 filters, 96 of them, stride 4 -> 55x55 outputs
    layer = Layer.from_conv("Conv1", 224, 224, 11, 11, 3, 96, 4)
    assert (layer.M, layer.N, layer.K) == (55 * 55, 96, 11 * 11 * 3)


def test_limited_bandwidth_stalls_and_calc_mode_does_not():
    layer = Layer.gemm("g", 4096, 512, 512)
    calc = time_layer(layer, ArrayConfig(rows=32, cols=32, dataflow="os", ifmap_sram_kb=64))
    slow = time_layer(layer, ArrayConfig(rows=32, cols=32, dataflow="os", ifmap_sram_kb=64,
                                         bandwidth_words_per_cycle=1))
    assert calc.stall_cycles == 0 and slow.stall_cycles > 0
    assert slow.ifmap_dram_reads > layer.M * layer.K  # does not fit half the SRAM: re-read per pass
    assert slow.total_cycles == slow.compute_cycles + slow.stall_cycles


def test_operand_that_cannot_fit_sram_is_a_user_error():
    with pytest.raises(MlscaleError, match="filter SRAM"):
        time_layer(Layer.gemm("g", 8, 8, 8), ArrayConfig(rows=256, cols=256, dataflow="ws", filter_sram_kb=16))


@pytest.mark.parametrize("dataflow,operand", [("os", "ofmap"), ("ws", "filter"), ("is", "ifmap")])
def test_only_the_stationary_operand_needs_a_whole_tile(dataflow, operand):
    small = {f"{op}_sram_kb": (1 if op == operand else 64) for op in ("ifmap", "filter", "ofmap")}
    layer = Layer.gemm("g", 100, 100, 100)
    with pytest.raises(MlscaleError, match=f"{operand} SRAM"):
        time_layer(layer, ArrayConfig(rows=64, cols=64, dataflow=dataflow, **small))
    # the streamed operands get by with 1 KiB (one 64-word edge per cycle)
    others = {f"{op}_sram_kb": (64 if op == operand else 1) for op in ("ifmap", "filter", "ofmap")}
    assert time_layer(layer, ArrayConfig(rows=64, cols=64, dataflow=dataflow, **others)).macs == 10**6


def test_progress_bar_on_long_networks(capsys):
    layers = [Layer.gemm(f"l{i}", 8, 8, 8) for i in range(25)]
    simulate(layers, "small", progress=True)
    assert "25/25" in capsys.readouterr().err


def test_simulate_accepts_tuples_layers_and_overrides():
    r = simulate((64, 64, 64), "small", dataflow="os", array=(64, 64))
    assert r.layers[0].compute_cycles == 3 * 64 - 2
    r = simulate([Layer.gemm("a", 5, 6, 7), Layer.gemm("b", 9, 9, 9)], "tpu-v1")
    assert [t.name for t in r.layers] == ["a", "b"] and r.macs == 5 * 6 * 7 + 729
    with pytest.raises(MlscaleError):
        simulate("nope.csv", "scale")
