"""The device cache is a file anyone (or a crash) may damage: any bytes in it read as a valid
cache or as "no cache" (then measured afresh), never an exception."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlscale.processors.measured import CACHE_VERSION, MeasuredDevice, _read_cache

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID = json.dumps({"version": CACHE_VERSION, "measured": [{
    "name": "cpu0", "kind": "cpu", "index": "cpu", "matmul_flops": {"fp32": 1e10}, "mem_bandwidth": 1e10,
    "matmul_spread": {"fp32": [9e9, 1.1e10]}, "mem_bandwidth_spread": [9e9, 1.1e10]}]}).encode()


def test_the_valid_cache_reads_back(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(VALID)
    (cpu,) = _read_cache(path)
    assert cpu.matmul_flops == {"fp32": 1e10} and cpu.matmul_spread["fp32"] == (9e9, 1.1e10)


@FUZZ
@given(data=st.one_of(
    st.integers(0, len(VALID)).map(lambda i: VALID[:i]),
    st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda t: VALID[:t[0]] + t[1] + VALID[t[0] + len(t[1]):]),
    st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                 max_leaves=8).map(lambda v: json.dumps({"version": CACHE_VERSION, "measured": v}).encode()),
))
def test_damaged_cache_reads_as_valid_or_none(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cache") / "c.json"
    path.write_bytes(data)
    got = _read_cache(path)
    assert got is None or all(isinstance(m, MeasuredDevice) and isinstance(m.name, str)
                              and all(isinstance(v, float | int) for v in m.matmul_flops.values())
                              and isinstance(m.mem_bandwidth, float | int) for m in got)
