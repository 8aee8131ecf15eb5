"""Safe mode's gradual close: each decision interval closes at most a fixed slice of each position,
sized from the position when safe mode began, so the book is flat after ceil(1 / fraction) intervals
without dumping everything into one print."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FlattenPlan:
    started_at: datetime
    fraction: float
    slices: dict[str, float]  # symbol -> max shares closed per interval
    principal: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at.isoformat(), "fraction": self.fraction, "slices": dict(self.slices),
                "principal": self.principal, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FlattenPlan":
        return cls(datetime.fromisoformat(data["started_at"]), float(data["fraction"]),
                   {str(k): float(v) for k, v in data["slices"].items()}, str(data["principal"]), str(data["reason"]))


def flatten_slices(positions: Mapping[str, float], fraction: float) -> dict[str, float]:
    """Whole shares per interval (at least one, at most the position; a fractional remainder is closed whole)."""
    out: dict[str, float] = {}
    for symbol, qty in positions.items():
        size = abs(qty)
        if size <= 0:
            continue
        out[symbol] = min(size, max(1.0, float(math.ceil(size * fraction - 1e-9))))
    return out
