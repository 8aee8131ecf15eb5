"""The FastAPI execution gateway.

    app = create_app(GatewaySettings(risk=load_risk(), broker_base_url="http://127.0.0.1:5100"))

Lifespan: open the audit store, restore the kill-switch state and durable state from it, recover
in-flight orders, reconcile the book with the broker (account + positions), subscribe to the
directive source (and, with `directive_bus_url`, to the Redis directive channel itself: alert
DIRECTIVE_BUS_DOWN while Redis is unreachable), and reconcile again every `reconcile_interval_s`;
on stop, close what it opened.
"""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gateway.api.console import router as console_router
from gateway.api.errors import install_error_handlers
from gateway.api.monitoring_routes import MonitoringSources
from gateway.api.monitoring_routes import router as monitoring_router
from gateway.api.routes import router
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.brokers.base import Broker
from gateway.directive_subscriber import RedisDirectiveSubscriber
from gateway.directives import DirectiveSource
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.service import GatewayService
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings,
    *,
    broker: Broker | None = None,
    directive_source: DirectiveSource | None = None,
    audit: AuditStore | None = None,
) -> FastAPI:
    """Build the gateway app. A broker or audit store passed in is used as is and not closed on
    stop (its owner closes it); the ones built from `settings` are the app's own."""
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_tokens:
            logger.warning("gateway API has no tokens configured: authentication is OFF (local paper trading only)")
        store = audit if audit is not None else await run_in_threadpool(
            AuditStore, settings.audit_url, table=settings.audit_table
        )
        routed = broker if broker is not None else AlpacaBroker(
            settings.broker_base_url, settings.broker_key_id, settings.broker_secret_key,
            timeout_s=settings.broker_timeout_s, retry=settings.retry,
        )
        service = GatewayService(settings, broker=routed, audit=store, metrics=metrics)
        try:
            await run_in_threadpool(service.start)
        except Exception:
            logger.exception("gateway failed to start (audit %s, broker %s)", settings.audit_url,
                             settings.broker_base_url)
            if audit is None:
                store.close()
            raise
        if directive_source is not None:
            directive_source.subscribe(service.receive_directive)
        subscriber = await run_in_threadpool(_start_directive_subscriber, service, settings)
        app.state.service = service
        logger.info("gateway ready: trading state %s, equity %.2f", service.trading_state.value,
                    service.portfolio_summary()["equity"])
        stop_reconciling = threading.Event()
        reconciler = _start_reconciler(service, settings.reconcile_interval_s, stop_reconciling)
        try:
            yield
        finally:
            stop_reconciling.set()
            if subscriber is not None:
                await run_in_threadpool(subscriber.close)
            if reconciler is not None:
                reconciler.join(timeout=30)
            service.stop()
            if audit is None:
                store.close()
            app.state.monitoring.close()

    app = FastAPI(title="marlops execution gateway", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.monitoring = MonitoringSources(settings)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(monitoring_router)
    app.include_router(console_router)
    return app


def _start_directive_subscriber(
    service: GatewayService, settings: GatewaySettings
) -> RedisDirectiveSubscriber | None:
    """With `directive_bus_url`, subscribe to the Redis directive channel (waits up to 2 s for the first
    subscription; Redis down at start only raises DIRECTIVE_BUS_DOWN, the listener keeps trying)."""
    if settings.directive_bus_url is None:
        return None
    service.directive_bus_configured(settings.directive_bus_url, settings.directive_channel)
    subscriber = RedisDirectiveSubscriber(
        settings.directive_bus_url, settings.directive_channel, service.receive_published_directive,
        on_up=service.directive_bus_up, on_down=service.directive_bus_down,
    )
    if not subscriber.start(wait_s=2.0):
        logger.error("directive bus %s not reachable at start (%s); trading goes on, with the defensive "
                     "fallback once the last directive's TTL has passed", settings.directive_channel,
                     subscriber.last_error)
    return subscriber


def _start_reconciler(service: GatewayService, interval_s: float, stop: threading.Event) -> threading.Thread | None:
    """Reconcile with the broker every `interval_s` seconds (0 = never) until `stop` is set."""
    if interval_s <= 0:
        return None

    def _loop() -> None:
        while not stop.wait(interval_s):
            try:
                service.reconcile_now(principal=service.settings.principal)
            except GatewayError as exc:
                # The next round tries again; the dependency trigger counts the failures.
                logger.warning("periodic reconciliation failed: %s", exc)

    thread = threading.Thread(target=_loop, name="gateway-reconciler", daemon=True)
    thread.start()
    return thread
