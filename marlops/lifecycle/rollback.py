"""Rollback: every symbol back to last-known-good (aliases and routing) or to the SL fallback, in one routing
change that the trading service applies at its next bar. Audited in the routing table and the lifecycle events."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from marlops.candidates import AGENTS, MASTER_AGENT, SL_FALLBACK, SYMBOL_AGENT
from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.promotion import rollback_versions
from marlops.routing import DEFAULT_ROUTE, PolicyRef, RoutingChange

logger = logging.getLogger(__name__)

TARGETS = ("last-known-good", "sl_fallback")


@dataclass(frozen=True)
class RollbackResult:
    to: str
    principal: str
    reason: str
    routing_revision: int
    versions: dict[str, str]  # agent -> version production now (last-known-good); empty for sl_fallback
    symbols_rerouted: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"to": self.to, "principal": self.principal, "reason": self.reason,
                "routing_revision": self.routing_revision, "versions": self.versions,
                "symbols_rerouted": self.symbols_rerouted}


def rollback(lc: LifecycleContext, *, to: str, principal: str, reason: str) -> RollbackResult:
    """One step back. `last-known-good`: the `production` alias of every agent moves back to `last-known-good`
    and the routing table's production/sl_fallback/master slots follow; `sl_fallback`: every symbol routes to
    the SL-threshold fallback (aliases untouched). Either way every symbol-specific route and the candidate slot
    are cleared, in ONE routing change."""
    if to not in TARGETS:
        raise LifecycleError(f"rollback target must be one of {', '.join(TARGETS)}, got {to!r}")
    if not principal.strip() or not reason.strip():
        raise LifecycleError("a rollback needs a principal and a reason (both are audited)")
    table = lc.routing.read()
    routes: dict[str, tuple[str, str | None] | None] = {s: None for s in table.routes if s != DEFAULT_ROUTE}
    policies: dict[str, PolicyRef | None] = {"candidate": None} if "candidate" in table.policies else {}
    versions: dict[str, str] = {}
    if to == "last-known-good":
        versions = rollback_versions(lc.ctx, AGENTS, principal=principal, reason=reason)
        policies.update({"production": PolicyRef(SYMBOL_AGENT, int(versions[SYMBOL_AGENT])),
                         "sl_fallback": PolicyRef(SL_FALLBACK, int(versions[SL_FALLBACK])),
                         "master": PolicyRef(MASTER_AGENT, int(versions[MASTER_AGENT]))})
        routes[DEFAULT_ROUTE] = ("production", None)
    else:
        if "sl_fallback" not in table.policies:
            raise LifecycleError("the routing table has no sl_fallback slot to roll back to; set it with "
                                 "`marlops route set --policy sl_fallback=sl_fallback/N`")
        routes[DEFAULT_ROUTE] = ("sl_fallback", None)
    new = lc.routing.apply(RoutingChange(policies=policies, routes=routes), principal=principal,
                           reason=f"rollback to {to}: {reason}")
    result = RollbackResult(to=to, principal=principal, reason=reason, routing_revision=new.revision,
                            versions=versions, symbols_rerouted=sorted(s for s in routes if s != DEFAULT_ROUTE))
    lc.store.record_event("rollback", principal=principal, detail=result.as_dict())
    logger.warning("ROLLBACK to %s by %s (%s): routing revision %d, in force at the next bar", to, principal, reason,
                   new.revision)
    return result
