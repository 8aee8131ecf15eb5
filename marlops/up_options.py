"""`marlops up`'s options and their defaults (ports, demo size), apart from marlops/up.py so that the `marlops`
parser reads the defaults without importing the stack."""

from __future__ import annotations

from dataclasses import dataclass

ALERT_CONTEXT_TOKEN = "alert_context.token"  # in <MARLOPS_HOME>/tokens/: Alertmanager -> context webhook bearer


@dataclass(frozen=True)
class UpOptions:
    dagster_port: int = 3000
    gateway_port: int = 8080
    exchange_port: int = 5100
    market_data_port: int = 5200
    mlflow_port: int = 5000
    trading_metrics_port: int = 9101
    master_metrics_port: int = 9102
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    alert_context_port: int = 9095
    playbooks_port: int = 9096
    with_monitoring: bool = True
    scrape_interval: str | None = None  # None: the shipped 15 s (the alert rules assume it); tests shorten it
    triton_http: int | None = None
    triton_grpc: int | None = None
    triton_metrics: int | None = None
    bars_per_second: float = 1.0
    symbols: int = 20
    days: int = 504
    seed: int = 7
    iterations: int = 80
    redis_url: str | None = None
    with_dagster: bool = True
    with_mlflow: bool = True
    live: bool = False  # Alpaca (keys from env/.env) instead of the local paper exchange and market data
    tickers: tuple[str, ...] = ()
    real_money: bool = False  # --live against a non-paper APCA_API_BASE_URL must be asked for by name
