"""Start and stop the serving stack: paper exchange, Triton, directive bus, execution gateway."""

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from contracts.config import RLConfig
from contracts.paper_account import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET
from gateway.app import create_app
from gateway.serve import free_port, serve_app_in_thread
from gateway.settings import GatewaySettings
from marlops.errors import StackError
from marlops.net import http_ok, wait_until
from marlops.paths import StatePaths
from serving.directive_bus import DirectiveBus, make_bus
from serving.triton_process import TritonServer

logger = logging.getLogger(__name__)

PAPER_KEY_ID, PAPER_SECRET = LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET  # the names marlops code has used


@dataclass(frozen=True)
class StackPorts:
    triton_http: int
    triton_grpc: int
    triton_metrics: int
    exchange: int
    gateway: int

    @classmethod
    def free(cls) -> "StackPorts":
        return cls(*(free_port() for _ in range(5)))


PAPER_INITIAL_CASH = 1_000_000.0  # every replay's paper account starts with this


class PaperExchangeProcess:
    """The local Alpaca-compatible paper exchange in its own process, like a real broker."""

    def __init__(self, port: int, log_path: Path, *, initial_cash: float = PAPER_INITIAL_CASH) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = log_path
        self._initial_cash = initial_cash
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10.0,
                                  headers={"APCA-API-KEY-ID": PAPER_KEY_ID, "APCA-API-SECRET-KEY": PAPER_SECRET})

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self._log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "paper_exchange", "--host", "127.0.0.1", "--port", str(self.port),
             "--initial-cash", str(self._initial_cash)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: self._proc is not None and self._proc.poll() is None
                       and http_ok(f"{self.url}/v2/clock", dict(self._http.headers))(),
                       timeout_s=60, what=f"paper exchange on {self.url} (log: {self._log_path})")
        except StackError:
            self.stop()
            raise

    def set_prices(self, prices: dict[str, float]) -> None:
        response = self._http.post("/_sim/prices", json={"prices": prices})
        if response.status_code >= 400:
            raise StackError(f"paper exchange refused prices: {response.status_code} {response.text[:300]}")

    def orders(self) -> list[dict[str, object]]:
        response = self._http.get("/v2/orders", params={"status": "all", "limit": 500})
        response.raise_for_status()
        result: list[dict[str, object]] = response.json()
        return result

    def sim_state(self) -> dict[str, object]:
        result: dict[str, object] = self._http.get("/_sim/state").json()
        return result

    def stop(self) -> None:
        self._http.close()
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None


class ServingStack:
    """Paper exchange (process) + Triton (process, no model loaded: the trading service's router loads what its
    routing table names) + gateway (uvicorn, in this process, so the in-process directive bus reaches it)."""

    def __init__(self, paths: StatePaths, config: RLConfig, *, ports: StackPorts, model_repository: Path,
                 audit_url: str | None = None, sectors: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.sectors = dict(sectors or {})
        self.config = config
        self.ports = ports
        self.model_repository = model_repository
        self.audit_url = audit_url or paths.audit_url
        self.exchange = PaperExchangeProcess(ports.exchange, paths.logs_dir / "paper_exchange.log")
        self.triton = TritonServer(model_repository, http_port=ports.triton_http, grpc_port=ports.triton_grpc,
                                   metrics_port=ports.triton_metrics, workdir=paths.triton_workdir)
        self.bus: DirectiveBus | None = None
        self._gateway_handle: object | None = None
        self.gateway_url = f"http://127.0.0.1:{ports.gateway}"

    def start(self) -> "ServingStack":
        self.paths.ensure()
        try:
            logger.info("starting paper exchange on :%d", self.ports.exchange)
            self.exchange.start()
            logger.info("starting tritonserver (http :%d, grpc :%d, metrics :%d)", self.ports.triton_http,
                        self.ports.triton_grpc, self.ports.triton_metrics)
            self.triton.start(timeout_s=self.config.serving.triton.startup_timeout_s)
            self.bus = make_bus(self.config.serving.directive_bus)
            settings = GatewaySettings(
                risk=self.config.risk,
                audit_url=self.audit_url,
                broker_base_url=self.exchange.url,
                broker_key_id=PAPER_KEY_ID,
                broker_secret_key=PAPER_SECRET,
                directive_ttl_seconds=self.config.serving.loop.directive_ttl_bars * self.config.serving.loop.bar_seconds,
                sectors=self.sectors,
            )
            logger.info("starting execution gateway on :%d", self.ports.gateway)
            self._gateway_handle = serve_app_in_thread(create_app(settings, directive_source=self.bus),
                                                       "127.0.0.1", self.ports.gateway)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def infer_url(self) -> str:
        """Where policy requests go: Triton's gRPC or HTTP endpoint, as `triton.protocol` says."""
        return self.triton.grpc_url if self.config.serving.triton.protocol == "grpc" else self.triton.http_url

    def stop(self) -> None:
        errors: list[str] = []
        handle = self._gateway_handle
        self._gateway_handle = None
        for name, action in (
            ("gateway", (lambda: handle.stop()) if handle is not None else None),  # type: ignore[attr-defined]
            ("directive bus", (lambda: self.bus.close()) if self.bus is not None else None),
            ("triton", self.triton.stop),
            ("paper exchange", self.exchange.stop),
        ):
            if action is None:
                continue
            try:
                action()
            except Exception as exc:  # keep stopping the rest; report at the end
                logger.error("stopping %s failed: %s", name, exc)
                errors.append(f"{name}: {exc}")
        if errors:
            raise StackError("stack did not stop cleanly: " + "; ".join(errors))
        logger.info("stack stopped")

    def __enter__(self) -> "ServingStack":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
