"""The input pipeline: built-in and file data sets, the held-out split, per-epoch batches, loaders.

Built-in data lives in memory as one tensor pair (`ArrayDataset`), so a batch is one indexing
operation rather than `batch_size` `__getitem__` calls and a collate. Batches are chosen by
`EpochBatchSampler`: a permutation from (seed, epoch) cut into global batches, of which each rank
takes its slice, so a run can resume mid-epoch and N workers x batch b see exactly what 1 worker x
batch N*b sees.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mlscale.config import DataConfig
from mlscale.errors import MlscaleError


class ArrayDataset(Dataset):
    """Features `x` (N, *shape) and integer labels `y` (N,) held in memory."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        assert len(x) == len(y)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, indices):  # DataLoader fetches a whole batch with this (torch >= 2.0)
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx]


@dataclass
class DataBundle:
    """What the engine needs to know about the data: the splits, sample shape, class count."""

    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    n_classes: int
    name: str
    fingerprint: str  # identifies the samples and split; a resumed run must see the same


def build_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Load `cfg.dataset`, standardise features with training-split statistics, split, reshape."""
    source = cfg.dataset
    if source == "digits":
        x, y, shape = _load_digits()
    elif source == "synthetic":
        x, y = _make_synthetic(cfg.n_samples, cfg.n_features, cfg.n_classes, seed)
        shape = (cfg.n_features,)
    else:
        x, y = read_table(Path(source), cfg.label_column)
        shape = (x.shape[1],)
    if cfg.input_shape:
        if math.prod(cfg.input_shape) != x.shape[1]:
            raise MlscaleError(
                f"data.input_shape {list(cfg.input_shape)} holds {math.prod(cfg.input_shape)} values, "
                f"but each sample has {x.shape[1]} features"
            )
        shape = tuple(cfg.input_shape)
    n = len(y)
    n_test = max(1, round(n * cfg.test_fraction))
    if n - n_test < 1:
        raise MlscaleError(f"data set '{source}' has {n} samples: too few to hold {cfg.test_fraction:.0%} out")
    digest = _fingerprint(x, y, f"{seed}/{cfg.test_fraction}")

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    xt = torch.from_numpy(x.astype(np.float32))
    mean, std = xt[train_idx].mean(0), xt[train_idx].std(0)
    xt = ((xt - mean) / torch.where(std > 1e-6, std, torch.ones_like(std))).reshape(n, *shape)
    yt = torch.from_numpy(y.astype(np.int64))
    return DataBundle(
        train=ArrayDataset(xt[train_idx].contiguous(), yt[train_idx].contiguous()),
        test=ArrayDataset(xt[test_idx].contiguous(), yt[test_idx].contiguous()),
        input_shape=shape,
        n_classes=int(y.max()) + 1,
        name=Path(source).stem if source not in ("digits", "synthetic") else source,
        fingerprint=digest,
    )


def _fingerprint(x: np.ndarray, y: np.ndarray, split: str) -> str:
    h = hashlib.sha256()
    for part in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        h.update(str((part.dtype, part.shape)).encode())
        h.update(memoryview(part).cast("B"))
    h.update(split.encode())
    return h.hexdigest()[:16]


def _load_digits():
    """The UCI hand-written digits (1797 x 8x8, 10 classes), embedded in the package."""
    with resources.files("mlscale").joinpath("assets/digits.npz").open("rb") as f:
        arrays = np.load(f)
        return arrays["x"], arrays["y"], (1, 8, 8)


def _make_synthetic(n_samples: int, n_features: int, n_classes: int, seed: int):
    """Gaussian blobs: one random centre per class, unit noise. Learnable, of any size."""
    g = torch.Generator().manual_seed(seed + 1)
    centres = torch.randn(n_classes, n_features, generator=g) * (3.0 / math.sqrt(n_features)) * 2
    y = torch.randint(n_classes, (n_samples,), generator=g)
    x = centres[y] + torch.randn(n_samples, n_features, generator=g)
    return x.numpy(), y.numpy()


# --- user files -----------------------------------------------------------------------------------


def read_table(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, F) float64 and class indices (N,) from a .npz, .csv or .parquet file."""
    if not path.exists():
        raise MlscaleError(f"data file not found: {path}")
    if path.is_dir():
        raise MlscaleError(f"data path is a directory, not a file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, labels = _read_npz(path, label_column)
    elif suffix == ".csv":
        x, labels, columns = _read_csv(path, label_column)
    elif suffix == ".parquet":
        x, labels, columns = _read_parquet(path, label_column)
    else:
        raise MlscaleError(
            f"data.dataset '{path}': unknown kind; use digits, synthetic, or a .npz, .csv or .parquet file"
        )
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise MlscaleError(f"{path}: no samples or no feature columns")
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        row, col = bad[0]
        what = columns[col] if suffix != ".npz" else f"feature {col}"
        raise MlscaleError(f"{path}: sample {row + 1}, {what}: value {x[row, col]} is not a finite number")
    _, y = np.unique(labels, return_inverse=True)
    return x, y.reshape(-1)


def _read_npz(path: Path, label_column: str):
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files or label_column not in arrays.files:
                raise MlscaleError(
                    f"{path}: a .npz needs features in array 'x' and labels in array '{label_column}' "
                    f"(data.label_column); it has {', '.join(arrays.files) or 'no arrays'}"
                )
            x, labels = arrays["x"], arrays[label_column]
    except MlscaleError:
        raise
    except Exception as err:  # zipfile/pickle/format errors of a malformed file
        raise MlscaleError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    if not np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_ or np.iscomplexobj(x):
        raise MlscaleError(f"{path}: array 'x' must be real numbers, got {x.dtype}")
    if x.ndim < 1:
        raise MlscaleError(f"{path}: array 'x' must hold one row per sample, got a single value")
    x = x.reshape(len(x), -1).astype(np.float64)
    if labels.ndim != 1 or len(labels) != len(x):
        raise MlscaleError(f"{path}: '{label_column}' must be 1-D with one label per row of 'x' ({len(x)})")
    return x, labels


def _read_csv(path: Path, label_column: str):
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MlscaleError(f"{path}: cannot read as CSV: {err}") from None
    if not rows or not any(rows[0]):
        raise MlscaleError(f"{path}: empty file; a CSV needs a header row naming the columns")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise MlscaleError(f"{path}: no label column '{label_column}' (data.label_column); columns are {', '.join(header)}")
    li = header.index(label_column)
    feature_cols = [i for i in range(len(header)) if i != li]
    x = np.empty((len(rows) - 1, len(feature_cols)))
    labels = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise MlscaleError(f"{path}: line {r} has {len(row)} fields, the header has {len(header)}")
        for j, c in enumerate(feature_cols):
            try:
                x[r - 2, j] = float(row[c])
            except ValueError:
                raise MlscaleError(f"{path}: line {r}, column '{header[c]}': {row[c]!r} is not a number") from None
        labels.append(row[li].strip())
    return x, _labels_array(labels), [header[c] for c in feature_cols]


def _read_parquet(path: Path, label_column: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MlscaleError("reading .parquet files needs pyarrow: pip install 'mlscale[parquet]'") from None
    try:
        return _parquet_arrays(pq.read_table(path), path, label_column)
    except MlscaleError:
        raise
    except Exception as err:  # pyarrow raises several types (some lazily, e.g. on a damaged name)
        raise MlscaleError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None


def _parquet_arrays(table, path: Path, label_column: str):
    if label_column not in table.column_names:
        raise MlscaleError(
            f"{path}: no label column '{label_column}' (data.label_column); columns are {', '.join(table.column_names)}"
        )
    columns = [c for c in table.column_names if c != label_column]
    feats = []
    for c in columns:
        col = table.column(c).to_numpy(zero_copy_only=False)
        if not np.issubdtype(col.dtype, np.number):
            raise MlscaleError(f"{path}: column '{c}' is not numeric ({table.schema.field(c).type})")
        feats.append(col.astype(np.float64))
    labels = table.column(label_column).to_numpy(zero_copy_only=False)
    x = np.stack(feats, axis=1) if feats else np.empty((len(labels), 0))
    return x, _labels_array(list(labels)), columns


def _labels_array(labels: list) -> np.ndarray:
    """Numeric labels stay numbers (so 2 < 10); anything else is a class name."""
    try:
        return np.array([float(v) for v in labels])
    except (TypeError, ValueError):
        return np.array([str(v) for v in labels])


# --- batches and loaders --------------------------------------------------------------------------


class EpochBatchSampler(Sampler[list[int]]):
    """Index batches for one epoch, for one rank of `world_size`.

    The epoch's order is a permutation of range(n) drawn from (seed, epoch) (identity when
    `shuffle` is off). It is cut into global batches of `batch_size * world_size`; rank r takes the
    r-th slice of `batch_size` of each. With `drop_last` a final partial global batch is dropped, so
    every rank takes the same number of steps; without it, the remainder is split among the ranks as
    evenly as it goes, and a rank whose part is empty still gets its (empty) batch: every rank runs
    the same number of forward passes, which sharded models need (FSDP gathers in each one).
    `set_epoch(epoch, start_batch)` picks the epoch and where in it to start (for resumption).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self):
        return (batch.tolist() for batch in self.index_batches())

    def index_batches(self):
        """This rank's batches of the epoch, as index tensors."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = order[b * self.global_batch:(b + 1) * self.global_batch]
            yield chunk if self.world_size == 1 else torch.tensor_split(chunk, self.world_size)[self.rank]


class InMemoryBatches:
    """Batches of an in-memory ArrayDataset, one indexing operation each. Used instead of a
    DataLoader when no worker processes are asked for: the samples are already tensors in memory,
    so a loader's per-batch machinery would only add latency to every step."""

    def __init__(self, dataset: ArrayDataset, sampler: EpochBatchSampler):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        x, y = self.dataset.x, self.dataset.y
        for idx in self.sampler.index_batches():
            yield x[idx], y[idx]


def _batched(batch):
    """Collate for ArrayDataset: `__getitems__` already returned stacked tensors."""
    return batch


def _collate(batch):
    """default_collate, with None for the empty batch a rank may get at the end of evaluation."""
    return default_collate(batch) if len(batch) else None


def make_loader(dataset: Dataset, sampler: EpochBatchSampler, *, num_workers: int = 0,
                prefetch_factor: int = 2, pin_memory: bool = False):
    """Batches of `dataset` in `sampler`'s order: a DataLoader (with worker processes when asked
    for), or plain tensor indexing for in-memory data loaded in the training process."""
    if isinstance(dataset, ArrayDataset) and num_workers == 0 and not pin_memory:
        return InMemoryBatches(dataset, sampler)
    workers = {"num_workers": num_workers}
    if num_workers:
        workers |= {"prefetch_factor": prefetch_factor, "persistent_workers": True}
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_batched if isinstance(dataset, ArrayDataset) else _collate,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # worker seeds from here, not from the global RNG (resumable dropout)
        **workers,
    )
