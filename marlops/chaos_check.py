"""What the crash test checks, as pure functions of what it read afterwards: the audit trail's order
rows, the broker's orders and both sides' positions. No I/O here, so every verdict can be tested on
hand-made inputs.

The promise being checked: every intent the gateway audited is either at the broker exactly once
or audited as not sent; no two broker orders for one client order id or for one
(policy_version, symbol, bar_index); no broker order that the audit trail does not announce.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.orders import NOT_AT_BROKER_STATUSES, OrderStatus

INTENT_STATUS = OrderStatus.INTENT.value
_EXAMPLES = 5


@dataclass(frozen=True)
class RunChecks:
    """Counts over one run; `examples` holds a few offending ids per failing check, for the report."""

    intents: int
    at_broker_once: int
    not_sent: int
    lost: int
    duplicates: int
    duplicate_client_ids: int
    duplicate_bar_orders: int
    orphans: int
    orders_at_broker: int
    # At the broker, yet the audit trail's last word on it is "not sent": the trail and the broker disagree.
    audit_contradictions: int
    lost_last_status: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.orphans == 0 and self.audit_contradictions == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "intents": self.intents,
            "at_broker_once": self.at_broker_once,
            "not_sent": self.not_sent,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "duplicate_client_ids": self.duplicate_client_ids,
            "duplicate_bar_orders": self.duplicate_bar_orders,
            "orphans": self.orphans,
            "orders_at_broker": self.orders_at_broker,
            "audit_contradictions": self.audit_contradictions,
            "lost_last_status": dict(self.lost_last_status),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }


def split_order_rows(order_rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The intent rows among audited order payloads (status "intent")."""
    return [row for row in order_rows if row.get("status") == INTENT_STATUS]


def check_run(
    intent_rows: Sequence[Mapping[str, Any]],
    order_rows: Sequence[Mapping[str, Any]],
    broker_orders: Sequence[Mapping[str, Any]],
) -> RunChecks:
    """Classify every audited intent against the broker's orders.

    intent_rows: audited "order" payloads with status "intent" (client_order_id, symbol,
        policy_version, bar_index); one intent may be audited more than once (a re-sent timestep).
    order_rows: every audited "order" payload, intents included, in audit sequence order; the last
        row of a client_order_id is the trail's latest word on it.
    broker_orders: every order the broker holds (client_order_id, id, symbol, ...).
    """
    intents: dict[str, Mapping[str, Any]] = {}
    for row in intent_rows:
        intents.setdefault(str(row["client_order_id"]), row)

    latest_status: dict[str, str] = {}
    for row in order_rows:
        latest_status[str(row["client_order_id"])] = str(row.get("status"))

    at_broker: Counter[str] = Counter(str(o["client_order_id"]) for o in broker_orders)

    at_broker_once = not_sent = lost = contradictions = 0
    lost_last: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cid, intent in intents.items():
        n = at_broker.get(cid, 0)
        status = latest_status.get(cid, INTENT_STATUS)
        if n == 1:
            at_broker_once += 1
            if status in NOT_AT_BROKER_STATUSES:
                contradictions += 1
                _example(examples, "audit_contradictions", {**_describe(cid, intent), "last_status": status})
        elif n == 0 and status in NOT_AT_BROKER_STATUSES:
            not_sent += 1
        elif n == 0:
            lost += 1
            lost_last[status] += 1
            _example(examples, "lost", {**_describe(cid, intent), "last_status": status})
        # n > 1 is counted below as a duplicate client id.

    duplicate_ids = [cid for cid, n in at_broker.items() if n > 1]
    for cid in duplicate_ids:
        _example(examples, "duplicates", {"client_order_id": cid, "broker_orders": at_broker[cid],
                                          "kind": "same client_order_id"})

    # One broker order per (policy_version, symbol, bar_index): a bar decided twice (e.g. replanned
    # with a different quantity after a restart) trades twice even though each client id is unique.
    by_bar: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    orphan_orders: list[Mapping[str, Any]] = []
    for order in broker_orders:
        cid = str(order["client_order_id"])
        intent = intents.get(cid)
        if intent is None:
            orphan_orders.append(order)
            continue
        key = (str(intent["policy_version"]), str(intent["symbol"]), int(intent["bar_index"]))
        by_bar[key].add(str(order.get("id", cid)))
    duplicate_bars = {key: ids for key, ids in by_bar.items() if len(ids) > 1}
    for (policy_version, symbol, bar_index), ids in duplicate_bars.items():
        _example(examples, "duplicates", {"policy_version": policy_version, "symbol": symbol,
                                          "bar_index": bar_index, "broker_orders": len(ids),
                                          "kind": "same bar"})
    for order in orphan_orders:
        _example(examples, "orphans", {"client_order_id": str(order["client_order_id"]),
                                       "broker_order_id": str(order.get("id")), "symbol": order.get("symbol")})

    return RunChecks(
        intents=len(intents),
        at_broker_once=at_broker_once,
        not_sent=not_sent,
        lost=lost,
        duplicates=len(duplicate_ids) + len(duplicate_bars),
        duplicate_client_ids=len(duplicate_ids),
        duplicate_bar_orders=len(duplicate_bars),
        orphans=len(orphan_orders),
        orders_at_broker=len(broker_orders),
        audit_contradictions=contradictions,
        lost_last_status=dict(lost_last),
        examples=dict(examples),
    )


def positions_differ(
    gateway_positions: Mapping[str, float], broker_positions: Mapping[str, float], *, tolerance: float = 1e-6
) -> dict[str, dict[str, float]]:
    """Symbols whose quantity differs between the gateway's book and the broker (absent = flat)."""
    return {
        symbol: {"gateway": gateway_positions.get(symbol, 0.0), "broker": broker_positions.get(symbol, 0.0)}
        for symbol in sorted(set(gateway_positions) | set(broker_positions))
        if abs(gateway_positions.get(symbol, 0.0) - broker_positions.get(symbol, 0.0)) > tolerance
    }


def _describe(cid: str, intent: Mapping[str, Any]) -> dict[str, Any]:
    return {"client_order_id": cid, "symbol": intent.get("symbol"), "bar_index": intent.get("bar_index"),
            "side": intent.get("side"), "qty": intent.get("qty")}


def _example(examples: dict[str, list[dict[str, Any]]], name: str, item: dict[str, Any]) -> None:
    if len(examples[name]) < _EXAMPLES:
        examples[name].append(item)
