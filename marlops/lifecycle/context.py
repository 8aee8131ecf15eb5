"""What every lifecycle stage reads: the pipeline context, the lifecycle store and the routing table, one database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from marlops.context import PipelineContext
from marlops.lifecycle.store import LifecycleStore
from marlops.routing_store import RoutingStore


@dataclass(frozen=True)
class LifecycleContext:
    ctx: PipelineContext
    store: LifecycleStore
    routing: RoutingStore

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return self.ctx.config.lifecycle


@contextmanager
def lifecycle_context(ctx: PipelineContext) -> Iterator[LifecycleContext]:
    """The lifecycle store and the routing table live in the marlops state store (MARLOPS_STATE_URL, default
    <MARLOPS_HOME>/state.db): the same table `marlops trade` follows, so a stage's routing change is live."""
    store = LifecycleStore(ctx.paths.state_url)
    routing = RoutingStore(ctx.paths.state_url)
    try:
        yield LifecycleContext(ctx=ctx, store=store, routing=routing)
    finally:
        routing.close()
        store.close()
