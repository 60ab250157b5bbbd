import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscale import MlscaleError
from mlscale.config import DataConfig
from mlscale.training.data import EpochBatchSampler, build_data, make_loader, read_table


def test_digits_is_embedded_and_split():
    data = build_data(DataConfig(), seed=0)
    assert (len(data.train), len(data.test)) == (1438, 359)
    assert data.input_shape == (1, 8, 8) and data.n_classes == 10
    x, y = data.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert build_data(DataConfig(), seed=0).fingerprint == data.fingerprint
    assert build_data(DataConfig(), seed=1).fingerprint != data.fingerprint


def test_synthetic_has_the_configured_size():
    data = build_data(DataConfig(dataset="synthetic", n_samples=500, n_features=12, n_classes=3), seed=0)
    assert len(data.train) + len(data.test) == 500
    assert data.input_shape == (12,) and data.n_classes == 3


def _write(tmp_path, kind, x, y, label="label"):
    path = tmp_path / f"data.{kind}"
    if kind == "npz":
        np.savez(path, x=x, **{label: y})
    elif kind == "csv":
        header = ",".join([f"f{i}" for i in range(x.shape[1])] + [label])
        rows = [",".join([*map(str, row), str(lab)]) for row, lab in zip(x, y)]
        path.write_text(header + "\n" + "\n".join(rows) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {f"f{i}": x[:, i] for i in range(x.shape[1])} | {label: y}
        pq.write_table(pa.table(cols), path)
    return path


@pytest.mark.parametrize("kind", ["npz", "csv", "parquet"])
def test_user_files_read_the_same(tmp_path, kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).round(3)
    y = rng.choice([3, 7, 11], size=40)
    fx, fy = read_table(_write(tmp_path, kind, x, y), "label")
    np.testing.assert_allclose(fx, x)
    assert sorted(set(fy.tolist())) == [0, 1, 2]  # labels become class indices, numeric order
    assert (fy == np.searchsorted([3, 7, 11], y)).all()
    data = build_data(DataConfig(dataset=str(tmp_path / f"data.{kind}")), seed=0)
    assert data.n_classes == 3 and data.input_shape == (3,)


def test_csv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("label,a\n1,2\n0,3\n".encode("utf-8-sig"))
    x, y = read_table(path, "label")
    assert x.tolist() == [[2.0], [3.0]] and y.tolist() == [1, 0]


def test_string_labels_and_input_shape(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,d,kind\n" + "\n".join(f"{i},{i},{i},{i},{'cat' if i % 2 else 'dog'}" for i in range(10)))
    data = build_data(DataConfig(dataset=str(path), label_column="kind", input_shape=[1, 2, 2]), seed=0)
    assert data.input_shape == (1, 2, 2) and data.n_classes == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b,label\n1,2,0\n3,x,1\n", "line 3, column 'b': 'x' is not a number"),
        ("a,b,label\n1,2,0\n3,1\n", "line 3 has 2 fields, the header has 3"),
        ("a,b,y\n1,2,0\n", "no label column 'label' (data.label_column); columns are a, b, y"),
        ("", "empty file"),
        ("a,b,label\n1,nan,0\n", "sample 1, b: value nan is not a finite number"),
    ],
)
def test_bad_csv_gets_one_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MlscaleError) as err:
        read_table(path, "label")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(MlscaleError, match="data file not found"):
        read_table(tmp_path / "missing.csv", "label")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(MlscaleError, match="unknown kind"):
        read_table(tmp_path / "x.txt", "label")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(MlscaleError, match="not a readable .npz"):
        read_table(tmp_path / "broken.npz", "label")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(MlscaleError, match="not a readable parquet"):
        read_table(tmp_path / "broken.parquet", "label")
    np.savez(tmp_path / "scalar.npz", x=np.float64(3.0), label=np.zeros(1))
    with pytest.raises(MlscaleError, match="one row per sample"):
        read_table(tmp_path / "scalar.npz", "label")
    np.savez(tmp_path / "complex.npz", x=np.ones((3, 2), dtype=complex), label=np.zeros(3))
    with pytest.raises(MlscaleError, match="must be real numbers"):
        read_table(tmp_path / "complex.npz", "label")
    np.savez(tmp_path / "nolabel.npz", x=np.zeros((3, 2)))
    with pytest.raises(MlscaleError, match="needs features in array 'x' and labels in array 'label'"):
        read_table(tmp_path / "nolabel.npz", "label")
    with pytest.raises(MlscaleError, match="input_shape"):
        build_data(DataConfig(input_shape=[2, 2]), seed=0)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab,\n1.5-xe\"", max_size=60))
def test_any_csv_text_reads_or_gets_a_clear_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    path.write_text("a,label\n" + text)
    try:
        x, y = read_table(path, "label")
    except MlscaleError as err:
        assert "\n" not in str(err)
    else:
        assert len(x) == len(y) and np.isfinite(x).all()


@given(n=st.integers(1, 300), b=st.integers(1, 40), world=st.integers(1, 4), epoch=st.integers(0, 3),
       drop_last=st.booleans())
def test_shards_are_disjoint_and_cover_the_epoch(n, b, world, epoch, drop_last):
    seen = []
    for rank in range(world):
        s = EpochBatchSampler(n, b, seed=7, rank=rank, world_size=world, drop_last=drop_last)
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == s.batches_per_epoch()  # every rank the same number, empty ones included
        seen += [i for batch in batches for i in batch]
    assert len(seen) == len(set(seen))
    expected = (n // (b * world)) * b * world if drop_last else n
    assert len(seen) == expected


def test_one_rank_of_n_sees_what_one_worker_with_n_times_the_batch_sees():
    whole = EpochBatchSampler(100, 8, seed=3)
    halves = [EpochBatchSampler(100, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for a, b0, b1 in zip(whole, *halves):
        assert a == b0 + b1


def test_resume_position_and_loader():
    s = EpochBatchSampler(50, 10, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=3)
    assert list(s) == full[3:] and len(s) == 2
    data = build_data(DataConfig(), seed=0)
    s.set_epoch(0)
    loader = make_loader(data.train, EpochBatchSampler(len(data.train), 32, seed=0))
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
