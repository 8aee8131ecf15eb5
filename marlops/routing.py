"""The routing table: which policy variant acts (and which one shadows) for each symbol, persisted.

    store = RoutingStore(StatePaths.from_env().state_url)
    table = store.apply(RoutingChange(policies={"candidate": PolicyRef("symbol_agent", 4)},
                                      routes={"AAPL": ("candidate", None), "*": ("production", "candidate")}),
                        principal="rita", reason="canary AAPL on v4")
    table.groups(["AAPL", "MSFT"])   # {symbol_agent/4: ["AAPL"], symbol_agent/3: ["MSFT"]}
    table.served()                   # {"symbol_agent": {3, 4}, "master_agent": {2}}: what Triton must load

Policy slots (production, candidate, sl_fallback, master) name a Triton model and version; routes map
a symbol (or DEFAULT_ROUTE "*", every symbol not listed) to the variant whose slot acts for it, and
optionally a shadow variant that is scored but not traded. Without a "*" row unlisted symbols route to
production.

Persistence and audit: `marlops.routing_store.RoutingStore`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marlops.errors import RoutingError

logger = logging.getLogger(__name__)

SYMBOL_VARIANTS = ("production", "candidate", "sl_fallback")
POLICY_SLOTS = ("production", "candidate", "sl_fallback", "master")  # slot -> (Triton model, version)
DEFAULT_ROUTE = "*"  # the route of every symbol not listed
IMPLICIT_DEFAULT_VARIANT = "production"  # the variant of unlisted symbols when there is no "*" row

_SYMBOL = re.compile(r"^[A-Z0-9.-]{1,32}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


# ---- values ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyRef:
    """One Triton model version; hashable; str() is "symbol_agent/3"."""

    model: str
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not _MODEL.match(self.model):
            raise RoutingError(f"model name {self.model!r} is not a valid Triton model name (letters, digits, _ . -)")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise RoutingError(f"policy version must be an integer >= 1, got {self.version!r} for model {self.model}")

    def __str__(self) -> str:
        return f"{self.model}/{self.version}"

    @classmethod
    def parse(cls, text: str) -> PolicyRef:
        """"symbol_agent/3" -> PolicyRef("symbol_agent", 3)."""
        model, sep, version = str(text).strip().rpartition("/")
        if not sep or not version.isdigit():
            raise RoutingError(f"policy {text!r} must look like MODEL/VERSION, e.g. symbol_agent/3")
        return cls(model, int(version))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version}


@dataclass(frozen=True)
class Route:
    symbol: str
    variant: str
    shadow: str | None = None  # a variant scored but not traded

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "shadow": self.shadow}


@dataclass(frozen=True)
class RoutingTable:
    revision: int
    policies: Mapping[str, PolicyRef]  # slot -> ref (slots may be unset)
    routes: Mapping[str, Route]  # symbol -> route, incl. DEFAULT_ROUTE

    def __post_init__(self) -> None:
        # Own copies: a table is a snapshot, changed only through RoutingStore.apply.
        object.__setattr__(self, "policies", dict(self.policies))
        object.__setattr__(self, "routes", dict(self.routes))

    @classmethod
    def empty(cls) -> RoutingTable:
        return cls(revision=0, policies={}, routes={})

    def route_for(self, symbol: str) -> Route:
        """The symbol's own row, else the default row (as this symbol's), else production."""
        route = self.routes.get(symbol)
        if route is not None:
            return route
        default = self.routes.get(DEFAULT_ROUTE)
        if default is not None:
            return Route(symbol, default.variant, default.shadow)
        return Route(symbol, IMPLICIT_DEFAULT_VARIANT)

    def policy_for(self, symbol: str) -> PolicyRef | None:
        """The ref of the symbol's variant's slot; None when that slot is unset."""
        return self.policies.get(self.route_for(symbol).variant)

    def shadow_for(self, symbol: str) -> PolicyRef | None:
        shadow = self.route_for(symbol).shadow
        return None if shadow is None else self.policies.get(shadow)

    def groups(self, symbols: Sequence[str]) -> dict[PolicyRef | None, list[str]]:
        """Symbols by acting policy, order kept (key None: their variant's slot is unset)."""
        grouped: dict[PolicyRef | None, list[str]] = {}
        for symbol in symbols:
            grouped.setdefault(self.policy_for(symbol), []).append(symbol)
        return grouped

    def shadow_groups(self, symbols: Sequence[str]) -> dict[PolicyRef, list[str]]:
        """Symbols by shadow policy, order kept; symbols without a (set) shadow are left out."""
        grouped: dict[PolicyRef, list[str]] = {}
        for symbol in symbols:
            ref = self.shadow_for(symbol)
            if ref is not None:
                grouped.setdefault(ref, []).append(symbol)
        return grouped

    def slots_in_use(self) -> set[str]:
        """Slots named by a route (variants and shadows, incl. the implicit default) and master."""
        used = {"master"}
        for route in self.routes.values():
            used.add(route.variant)
            if route.shadow is not None:
                used.add(route.shadow)
        if DEFAULT_ROUTE not in self.routes:
            used.add(IMPLICIT_DEFAULT_VARIANT)
        return used

    def served(self) -> dict[str, set[int]]:
        """Model -> every version named by a slot in use: what Triton must have loaded."""
        served: dict[str, set[int]] = {}
        for slot in sorted(self.slots_in_use()):
            ref = self.policies.get(slot)
            if ref is not None:
                served.setdefault(ref.model, set()).add(ref.version)
        return served

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: {"revision", "policies": {slot: {model, version, ref}}, "routes": {symbol: {variant, shadow}}}."""
        return {
            "revision": self.revision,
            "policies": {
                slot: {**self.policies[slot].to_dict(), "ref": str(self.policies[slot])}
                for slot in POLICY_SLOTS if slot in self.policies
            },
            "routes": {symbol: self.routes[symbol].to_dict() for symbol in _symbol_order(self.routes)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        policies = {
            str(slot): PolicyRef(str(ref["model"]), int(ref["version"]))
            for slot, ref in (data.get("policies") or {}).items()
        }
        routes = {
            str(symbol): Route(str(symbol), str(row["variant"]), row.get("shadow"))
            for symbol, row in (data.get("routes") or {}).items()
        }
        return cls(revision=int(data.get("revision", 0)), policies=policies, routes=routes)


def _symbol_order(routes: Mapping[str, Any]) -> list[str]:
    return sorted(routes, key=lambda s: (s != DEFAULT_ROUTE, s))


@dataclass(frozen=True)
class RoutingChange:
    """What one `apply` changes: slots (None clears) and routes (symbol -> (variant, shadow); None removes)."""

    policies: Mapping[str, PolicyRef | None] = field(default_factory=dict)
    routes: Mapping[str, tuple[str, str | None] | None] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.policies and not self.routes

    def to_dict(self) -> dict[str, Any]:
        return {
            "policies": {slot: (None if ref is None else str(ref)) for slot, ref in self.policies.items()},
            "routes": {
                symbol: (None if row is None else {"variant": _route_value(symbol, row)[0],
                                                   "shadow": _route_value(symbol, row)[1]})
                for symbol, row in self.routes.items()
            },
        }


def _route_value(symbol: str, row: Any) -> tuple[str, str | None]:
    if isinstance(row, str):
        return row, None
    if isinstance(row, Route):
        return row.variant, row.shadow
    if isinstance(row, (tuple, list)) and len(row) == 2:
        return row[0], row[1]
    raise RoutingError(f"route for {symbol!r} must be (variant, shadow) or None, got {row!r}")


# ---- validation --------------------------------------------------------------------------------
def validate_symbol(symbol: str) -> None:
    if symbol == DEFAULT_ROUTE:
        return
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise RoutingError(
            f"symbol {symbol!r} is not valid: 1-32 characters of A-Z, 0-9, '.', '-' (or {DEFAULT_ROUTE!r} for the default)"
        )


def apply_change(table: RoutingTable, change: RoutingChange) -> RoutingTable:
    """The table `change` makes of `table` (revision + 1), or RoutingError naming every problem."""
    problems: list[str] = []
    policies = dict(table.policies)
    cleared: set[str] = set()
    for slot, ref in change.policies.items():
        if slot not in POLICY_SLOTS:
            problems.append(f"unknown policy slot {slot!r} (slots: {', '.join(POLICY_SLOTS)})")
        elif ref is None:
            if slot in policies:
                cleared.add(slot)
            policies.pop(slot, None)
        elif not isinstance(ref, PolicyRef):
            problems.append(f"slot {slot}: expected a PolicyRef (model/version), got {ref!r}")
        else:
            policies[slot] = ref
    routes = dict(table.routes)
    for symbol, row in change.routes.items():
        try:
            validate_symbol(symbol)
        except RoutingError as exc:
            problems.append(str(exc))
            continue
        if row is None:
            routes.pop(symbol, None)
            continue
        try:
            variant, shadow = _route_value(symbol, row)
        except RoutingError as exc:
            problems.append(str(exc))
            continue
        if variant not in SYMBOL_VARIANTS:
            problems.append(f"{symbol}: unknown variant {variant!r} (variants: {', '.join(SYMBOL_VARIANTS)})")
            continue
        if shadow is not None and shadow not in SYMBOL_VARIANTS:
            problems.append(f"{symbol}: unknown shadow variant {shadow!r} (variants: {', '.join(SYMBOL_VARIANTS)} or none)")
            continue
        if shadow == variant:
            problems.append(f"{symbol}: shadow {shadow!r} is the acting variant; a shadow must be another variant")
            continue
        routes[symbol] = Route(symbol, variant, shadow)
    new = RoutingTable(revision=table.revision + 1, policies=policies, routes=routes)
    if not problems:
        for symbol in _symbol_order(routes):
            route = routes[symbol]
            for role, variant in (("route", route.variant), ("shadow", route.shadow)):
                if variant is not None and variant not in policies:
                    problems.append(
                        f"cannot {role} {symbol} to {variant!r}: policy slot {variant!r} is unset "
                        f"(set it first: --policy {variant}=MODEL/VERSION)"
                    )
        for slot in sorted(cleared):
            if slot == IMPLICIT_DEFAULT_VARIANT and DEFAULT_ROUTE not in routes:
                problems.append(f"cannot clear slot {slot!r}: every symbol without a route uses it (no {DEFAULT_ROUTE!r} row)")
    if problems:
        raise RoutingError("routing change refused, nothing written: " + "; ".join(problems))
    return new
