"""The worker counts and deadlines users type: `1,2,4`, `1-1024` (powers of two), `8-64:8`, `2h`."""

from __future__ import annotations

import math
import re

from mlscale.errors import MlscaleError

MAX_WORKERS = 1 << 20
MAX_COUNTS = 4096


def parse_workers(text: str) -> list[int]:
    """Sorted, distinct worker counts from a comma-separated list of items:

    - `N`: that count;
    - `A-B`: A, then doubling while within B, then B (`1-1024`: 1, 2, 4, ..., 1024; `3-20`: 3, 6, 12, 20);
    - `A-B:S`: every S-th count from A to B (`8-32:8`: 8, 16, 24, 32).

    >>> parse_workers("1-8,12")
    [1, 2, 4, 8, 12]
    """
    counts: set[int] = set()
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise MlscaleError("--workers: give worker counts, e.g. 1,2,4 or 1-1024 (powers of two) or 8-64:8")
    for item in items:
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+)(?:\s*:\s*(\d+))?)?", item)
        if not m:
            raise MlscaleError(f"--workers: cannot read '{item}'; use counts like 1,2,4 or ranges 1-1024 or 8-64:8")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo < 1 or hi > MAX_WORKERS:
            raise MlscaleError(f"--workers: '{item}': counts go from 1 to {MAX_WORKERS}")
        if hi < lo:
            raise MlscaleError(f"--workers: '{item}': the range ends below its start")
        if m.group(3):
            step = int(m.group(3))
            if step < 1:
                raise MlscaleError(f"--workers: '{item}': the step must be at least 1")
            if (hi - lo) // step + 1 + len(counts) > MAX_COUNTS:
                raise MlscaleError(f"--workers: '{item}' names more than {MAX_COUNTS} counts; take a larger step")
            counts.update(range(lo, hi + 1, step))
        else:
            n = lo
            while n < hi:
                counts.add(n)
                n *= 2
            counts.add(hi)
        if len(counts) > MAX_COUNTS:
            raise MlscaleError(f"--workers names more than {MAX_COUNTS} counts")
    return sorted(counts)


_UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `45m`, `2h`, `1.5d`, `1h30m` or a plain number of seconds."""
    raw = str(text).strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(sec|min|s|m|h|d)", raw)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(sec|min|s|m|h|d)", "", raw).strip():
            raise MlscaleError(f"cannot read the duration '{text}'; use e.g. 90s, 45m, 2h, 1h30m or 1.5d") from None
        seconds = sum(float(v) * _UNITS_S[u] for v, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise MlscaleError(f"the duration '{text}' must be positive")
    return seconds
