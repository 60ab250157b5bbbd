"""Property-based fuzzing of everything that reads user input: every generated input either works or
gets the project's own error type (one line), never an unhandled exception."""

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlscale import MlscaleError
from mlscale.cli.train import parse_overrides
from mlscale.config import TrainConfig, build_config, load_yaml
from mlscale.training import checkpoint as ckpt
from mlscale.training.data import read_table

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _clear(err: MlscaleError) -> None:
    assert str(err).strip() and "\n" not in str(err).strip()


def _mutations(data: bytes):
    """Byte strings derived from a valid file: cut, overwritten, spliced."""
    n = len(data)
    cut = st.integers(0, n).map(lambda i: data[:i])
    flip = st.tuples(st.integers(0, max(0, n - 1)), st.binary(min_size=1, max_size=16)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0] + len(t[1]):])
    return st.one_of(cut, flip, st.binary(max_size=256))


@FUZZ
@given(text=st.text(max_size=200))
def test_any_yaml_text_loads_or_gets_a_clear_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "run.yaml"
    path.write_text(text)
    try:
        cfg = build_config(load_yaml(path))
    except MlscaleError as err:
        _clear(err)
    else:
        assert isinstance(cfg, TrainConfig)


_flag = st.sampled_from(["--epochs", "--optim.lr", "--model.name", "--batch-size", "--data.input_shape", "--x", "--",
                         "-e", "--seed=", "--model.width=3", "--precision"])
_value = st.one_of(st.text(max_size=8), st.integers(-3, 10**12).map(str), st.sampled_from(["1e-3", "[1,8,8]", "cnn",
                                                                                             "nan", "inf", "true"]))


@FUZZ
@given(argv=st.lists(st.one_of(_flag, _value), max_size=8))
def test_any_command_line_overrides_build_or_get_a_clear_error(argv):
    try:
        cfg = build_config({}, parse_overrides(argv))
    except MlscaleError as err:
        _clear(err)
    else:
        assert isinstance(cfg, TrainConfig)


@FUZZ
@given(text=st.text(max_size=120))
def test_any_csv_text_reads_or_gets_a_clear_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    path.write_bytes(("f1,label\n" + text).encode("utf-8", "surrogatepass"))
    try:
        x, y = read_table(path, "label")
    except MlscaleError as err:
        _clear(err)
    else:
        assert len(x) == len(y) and np.isfinite(x).all()


_arrays = hnp.arrays(dtype=st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(), hnp.unicode_string_dtypes()),
                     shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))


@FUZZ
@given(x=_arrays, label=_arrays)
def test_any_npz_arrays_read_or_get_a_clear_error(tmp_path_factory, x, label):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, x=x, label=label)
    try:
        features, y = read_table(path, "label")
    except MlscaleError as err:
        _clear(err)
    else:
        assert len(features) == len(y) and np.isfinite(features).all()


def _valid_bytes(kind: str) -> bytes:
    buf = io.BytesIO()
    if kind == "npz":
        np.savez(buf, x=np.arange(12.0).reshape(6, 2), label=np.arange(6) % 2)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "label": [0, 1, 0]}), buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["npz", "parquet"])
def test_any_damaged_data_file_reads_or_gets_a_clear_error(tmp_path_factory, kind):
    @FUZZ
    @given(data=_mutations(_valid_bytes(kind)))
    def check(data):
        path = tmp_path_factory.mktemp(kind) / f"d.{kind}"
        path.write_bytes(data)
        try:
            x, y = read_table(path, "label")
        except MlscaleError as err:
            _clear(err)
        else:
            assert len(x) == len(y) and np.isfinite(x).all()

    check()


def test_any_damaged_checkpoint_loads_or_gets_a_clear_error(tmp_path_factory):
    buf = io.BytesIO()
    torch.save({"format": ckpt.FORMAT, "model": {"w": torch.arange(6.0)}, "loop": {"step": 3}}, buf)

    @FUZZ
    @given(data=_mutations(buf.getvalue()))
    def check(data):
        path = tmp_path_factory.mktemp("ckpt") / "step-00000003.pt"
        path.write_bytes(data)
        try:
            payload = ckpt.load_checkpoint(path)
        except MlscaleError as err:
            _clear(err)
        else:
            assert isinstance(payload, dict)

    check()
