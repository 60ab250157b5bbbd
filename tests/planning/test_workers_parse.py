"""Worker lists, deadlines and price tables: what users type, parsed or refused in one line."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscale.errors import MlscaleError
from mlscale.planning.prices import load_prices, price_of
from mlscale.planning.workers import MAX_COUNTS, parse_duration, parse_workers


def test_worker_lists():
    assert parse_workers("1,2,4") == [1, 2, 4]
    assert parse_workers("1-1024") == [2 ** k for k in range(11)]
    assert parse_workers("3-20") == [3, 6, 12, 20]
    assert parse_workers("8-32:8, 2") == [2, 8, 16, 24, 32]
    assert parse_workers(" 4 ,4,1") == [1, 4]


@pytest.mark.parametrize("bad", ["", "0", "a", "1-", "4-2", "1,,x", "2-8:0", "1-2000000", "1.5", "-3", "1-100000:1"])
def test_bad_worker_lists_are_one_line(bad):
    with pytest.raises(MlscaleError) as err:
        parse_workers(bad)
    assert "\n" not in str(err.value) and "--workers" in str(err.value)


@settings(max_examples=300, derandomize=True)
@given(st.text(alphabet="0123456789-:, ab", max_size=20))
def test_any_worker_text_parses_or_is_a_clear_error(text):
    try:
        counts = parse_workers(text)
    except MlscaleError as err:
        assert "\n" not in str(err)
        return
    assert counts == sorted(set(counts)) and counts[0] >= 1 and len(counts) <= MAX_COUNTS


@settings(max_examples=200, derandomize=True)
@given(st.integers(1, 5000), st.integers(0, 5000))
def test_a_range_holds_its_ends_and_doubles_between(lo, extra):
    counts = parse_workers(f"{lo}-{lo + extra}")
    assert counts[0] == lo and counts[-1] == lo + extra
    assert all(b == 2 * a for a, b in zip(counts[:-2], counts[1:-1]))


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("45m") == 2700 and parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400 and parse_duration("1.5d") == 129600 and parse_duration("600") == 600
    for bad in ("", "soon", "-1h", "0", "2 hours", "h"):
        with pytest.raises(MlscaleError):
            parse_duration(bad)


def test_price_tables(tmp_path):
    good = tmp_path / "prices.yaml"
    good.write_text("cpu: 0.1\nh100-sxm: 3\n")
    prices = load_prices(good)
    assert prices == {"cpu": 0.1, "h100-sxm": 3.0} and price_of(prices, "cpu") == 0.1 and price_of(None, "x") is None
    with pytest.raises(MlscaleError, match="no price for device 'tpu-v4'"):
        price_of(prices, "tpu-v4")
    for text, expect in [("cpu: -1\n", "negative"), ("cpu: lots\n", "must be a number"), ("- 1\n", "mapping"),
                         ("cpu: .nan\n", "must be a number"), ("{}\n", "maps device names")]:
        good.write_text(text)
        with pytest.raises(MlscaleError, match=expect):
            load_prices(good)


def test_shipped_example_prices_load():
    from pathlib import Path

    prices = load_prices(Path(__file__).resolve().parents[2] / "examples" / "prices.yaml")
    assert prices["cpu"] > 0 and "h100-sxm" in prices
