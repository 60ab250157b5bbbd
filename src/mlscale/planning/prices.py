"""The user's price table: what one device costs per hour, read from YAML.

    # prices.yaml: device name -> price per device-hour (any one currency)
    cpu: 0.10
    h100-sxm: 3.00
"""

from __future__ import annotations

import math
from pathlib import Path

from mlscale.errors import MlscaleError


def load_prices(path: str | Path) -> dict[str, float]:
    """device name -> price per device-hour. A negative, non-numeric or non-finite price, or a file
    that is not such a mapping, is one clear error."""
    from mlscale.config import load_yaml

    table = load_yaml(path)
    if not isinstance(table, dict) or not table:
        raise MlscaleError(f"{path}: a price table maps device names to prices per device-hour, e.g. 'h100-sxm: 3.0'")
    prices = {}
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MlscaleError(f"{path}: the price of '{name}' must be a number per device-hour, got {value!r}")
        if value < 0:
            raise MlscaleError(f"{path}: the price of '{name}' is negative ({value}); prices are per device-hour, >= 0")
        prices[str(name)] = float(value)
    return prices


def price_of(prices: dict[str, float] | None, device: str, source: str = "the price table") -> float | None:
    """The device's price per hour; None without a table; an error when the table lacks it."""
    if prices is None:
        return None
    if device not in prices:
        raise MlscaleError(f"{source} has no price for device '{device}' (it prices {', '.join(sorted(prices))})")
    return prices[device]
