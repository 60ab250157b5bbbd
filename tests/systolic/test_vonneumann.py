"""The naive MAC loop vs the array: accesses, bytes, energy."""

from mlscale.processors.systolic import ENERGY_PJ, ArrayConfig, Layer, compare, time_layer


def test_naive_loop_touches_memory_four_times_per_mac_and_the_array_reuses_operands():
    t = time_layer(Layer.gemm("g", 256, 256, 256), ArrayConfig(rows=32, cols=32, dataflow="ws"))
    c = compare(t)
    assert c.naive_accesses == 4 * 256**3
    assert c.systolic_sram_accesses == t.ifmap_sram_reads + t.filter_sram_reads + t.ofmap_sram_writes
    # each operand word read from SRAM feeds a whole row or column of PEs: reuse ~ array size
    assert c.access_ratio > 8
    assert c.energy_ratio > 10
    expected = t.macs * ENERGY_PJ["mac"] + 4 * t.macs * ENERGY_PJ["dram_per_byte"]
    assert abs(c.naive_energy_uj - expected * 1e-6) < 1e-9
