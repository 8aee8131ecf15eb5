"""The hash chain: each row's hash covers its content and the previous row's hash.

Editing, deleting or reordering any row changes a hash that a later row commits to.
"""

import hashlib
import json
import math
from datetime import datetime
from typing import Any

from gateway.domain.market_time import as_utc

GENESIS_HASH = "0" * 64


def normalize_payload(value: Any) -> Any:
    """JSON-safe copy: datetimes as ISO text, non-finite floats as text (JSON has no NaN), tuples as lists."""
    if isinstance(value, dict):
        return {str(k): normalize_payload(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize_payload(v) for v in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def timestamp_text(moment: datetime) -> str:
    """UTC, microseconds: what every backend stores losslessly."""
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds")


def row_hash(
    *, seq: int, kind: str, occurred_at: datetime, principal: str, payload: Any, prev_hash: str
) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "kind": kind,
            "occurred_at": timestamp_text(occurred_at),
            "principal": principal,
            "payload": payload,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()
