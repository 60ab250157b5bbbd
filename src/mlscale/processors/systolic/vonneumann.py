"""The von Neumann comparison: a naive sequential MAC loop vs the systolic array, same layer.

The naive loop is the textbook one (`for m, n, k: C[m, n] += A[m, k] * B[k, n]`) on a machine whose
every operand comes from memory: per MAC, read A[m, k], read B[k, n], read C[m, n], write C[m, n].
The systolic array instead reads each operand word once from SRAM per pass and hands it from PE to
PE (operand reuse); only `timing.py`'s SRAM and DRAM traffic touches memory.

Energy table (`ENERGY_PJ`): 45 nm figures from Horowitz, "Computing's energy problem (and what we can
do about it)", ISSCC 2014: 8-bit multiply 0.2 pJ + 8-bit add 0.03 pJ; SRAM read of 64 bits from a
32 KB array 20 pJ (2.5 pJ/byte); DRAM 1.3-2.6 nJ per 64 bits (lower end, 162.5 pJ/byte). A PE-to-PE
register hop costs 2x a MAC, the ratio Eyeriss measured (Chen et al., ISCA 2016, Fig. 4). The naive
loop's memory is DRAM (no cache: the von Neumann worst case the TPU paper contrasts with).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mlscale.processors.systolic.timing import LayerTiming

#: energy per event in picojoules; per byte for memories, per 8-bit operation for the datapath
ENERGY_PJ = {
    "mac": 0.23,  # 8-bit multiply (0.2) + add (0.03), Horowitz 2014
    "pe_hop_per_byte": 0.46,  # neighbour register transfer, 2x MAC (Eyeriss)
    "sram_per_byte": 2.5,  # 32 KB SRAM, 20 pJ / 64 bits (Horowitz 2014)
    "dram_per_byte": 162.5,  # DRAM, 1.3 nJ / 64 bits (Horowitz 2014)
}


@dataclass(frozen=True)
class VonNeumannComparison:
    """Memory accesses, bytes moved and energy: naive MAC loop vs systolic array, one layer.

    Attributes:
        macs: M * N * K.
        naive_accesses: memory accesses of the naive loop, 4 per MAC.
        naive_bytes: bytes it moves to and from memory.
        naive_energy_uj: its energy in microjoules (MACs + DRAM accesses).
        systolic_sram_accesses: words read or written between the SRAMs and the array.
        systolic_dram_accesses: words over the DRAM interface.
        systolic_bytes: bytes moved to and from memory (SRAM + DRAM).
        pe_hops: operand/partial-sum transfers between neighbouring PEs (2 per MAC).
        systolic_energy_uj: MACs + PE hops + SRAM + DRAM, microjoules.
        access_ratio: naive_accesses / (SRAM + DRAM accesses of the array): the operand reuse.
        energy_ratio: naive_energy_uj / systolic_energy_uj.
    """

    macs: int
    naive_accesses: int
    naive_bytes: int
    naive_energy_uj: float
    systolic_sram_accesses: int
    systolic_dram_accesses: int
    systolic_bytes: int
    pe_hops: int
    systolic_energy_uj: float
    access_ratio: float
    energy_ratio: float

    def as_dict(self) -> dict:
        return asdict(self)


def compare(t: LayerTiming, word_bytes: int = 1, energy_pj: dict | None = None) -> VonNeumannComparison:
    """Compare the naive MAC loop with the array's traffic for one timed layer.

    Example:
        >>> from mlscale.processors.systolic.array import ArrayConfig
        >>> from mlscale.processors.systolic.layers import Layer
        >>> from mlscale.processors.systolic.timing import time_layer
        >>> c = compare(time_layer(Layer.gemm("g", 64, 64, 64), ArrayConfig(rows=16, cols=16)))
        >>> c.naive_accesses, c.access_ratio > 1
        (1048576, True)
    """
    e = ENERGY_PJ if energy_pj is None else energy_pj
    naive_accesses = 4 * t.macs
    naive_bytes = naive_accesses * word_bytes
    naive_pj = t.macs * e["mac"] + naive_bytes * e["dram_per_byte"]
    sram = t.ifmap_sram_reads + t.filter_sram_reads + t.ofmap_sram_writes
    dram = t.ifmap_dram_reads + t.filter_dram_reads + t.ofmap_dram_writes
    hops = 2 * t.macs
    systolic_pj = (
        t.macs * e["mac"]
        + hops * word_bytes * e["pe_hop_per_byte"]
        + sram * word_bytes * e["sram_per_byte"]
        + dram * word_bytes * e["dram_per_byte"]
    )
    return VonNeumannComparison(
        macs=t.macs,
        naive_accesses=naive_accesses,
        naive_bytes=naive_bytes,
        naive_energy_uj=naive_pj * 1e-6,
        systolic_sram_accesses=sram,
        systolic_dram_accesses=dram,
        systolic_bytes=(sram + dram) * word_bytes,
        pe_hops=hops,
        systolic_energy_uj=systolic_pj * 1e-6,
        access_ratio=naive_accesses / (sram + dram),
        energy_ratio=naive_pj / systolic_pj,
    )
