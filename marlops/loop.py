"""The decision loop: replayed bars -> observations -> one Triton call per timestep -> gateway.

Bars reach the paper exchange first (that is the market moving), then the timer starts: the
measured decision latency is bar in -> decisions accepted by the gateway (orders routed).
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contracts.decisions import SymbolDecision, TimestepDecisions
from contracts.policy import DEFAULT_ACTION_LEVELS
from features.observation import ObservationBuilder, observation_checksum
from features.service import FeatureService
from market_data.replay import ReplayClock, bars_at
from marlops.gateway_client import GatewayClient
from serving.client import PolicyOutput
from serving.master_service import MasterAgentService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRecord:
    bar_index: int
    timestep: str
    n_symbols: int
    n_orders: int
    n_filled: int
    n_denied: int
    latency_ms: float
    inference_ms: float
    observation_checksum: str
    trading_state: str
    directive_mode: str | None
    equity: float


@dataclass(frozen=True)
class LoopResult:
    steps: tuple[StepRecord, ...]
    directives_published: int

    def latencies_ms(self) -> np.ndarray:
        return np.array([s.latency_ms for s in self.steps], dtype=float)


class DecisionLoop:
    def __init__(
        self,
        *,
        features: FeatureService,
        builder: ObservationBuilder,
        symbol_infer: Callable[[np.ndarray], PolicyOutput],
        gateway: GatewayClient,
        policy_version: str,
        master: MasterAgentService | None = None,
        set_exchange_prices: Callable[[dict[str, float]], None] | None = None,
        action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> None:
        self._features = features
        self._builder = builder
        self._infer = symbol_infer
        self._gateway = gateway
        self._policy_version = policy_version
        self._master = master
        self._set_prices = set_exchange_prices
        self._levels = np.asarray(action_levels, dtype=float)
        self._on_step = on_step
        self._held_levels: dict[str, float] = {}

    def _position_levels(self, symbols: Sequence[str]) -> np.ndarray:
        # As in training: the level each symbol's agent chose last (its held intent, before overlay sizing).
        return np.array([self._held_levels.get(s, 0.0) for s in symbols], dtype=np.float32)

    def run(self, bars: pd.DataFrame, clock: ReplayClock) -> LoopResult:
        portfolio = self._gateway.portfolio()
        steps: list[StepRecord] = []
        directives = 0
        for bar_index, ts in enumerate(clock):
            bars_now = bars_at(bars, ts)
            if self._set_prices is not None:
                self._set_prices({str(r.symbol): float(r.close) for r in bars_now.itertuples()})
            t0 = time.perf_counter()
            snap = self._features.on_bars(bars_now)
            symbols = list(snap.symbols)
            levels = self._position_levels(symbols)
            gross = float(portfolio.get("gross_exposure", 0.0))
            drawdown = float(portfolio.get("drawdown", 0.0))
            mode = None
            if self._master is not None:
                master_obs = self._builder.master_observation(snap.master_row, drawdown, gross)
                directive = self._master.step(snap.timestamp.to_pydatetime(), bar_index, master_obs, snap.regime_shift)
                if directive is not None:
                    directives += 1
                    mode = directive.mode
            obs = self._builder.symbol_observations(snap.market_rows.loc[symbols], levels, gross)
            checksum = observation_checksum(obs)
            logger.debug("bar %d %s observation checksum %s", bar_index, ts, checksum)
            t_inf = time.perf_counter()
            out = self._infer(obs)
            inference_ms = (time.perf_counter() - t_inf) * 1000
            actions = np.asarray(out.actions).reshape(-1)
            decisions = TimestepDecisions(
                timestep=snap.timestamp.to_pydatetime(),
                bar_index=bar_index,
                policy_version=self._policy_version,
                observation_checksum=checksum,
                decisions=tuple(
                    SymbolDecision(
                        symbol=sym,
                        action=int(actions[i]),
                        target_level=float(self._levels[int(actions[i])]),
                        probabilities=tuple(float(p) for p in np.asarray(out.probabilities)[i]),
                        price=float(snap.prices[sym]),
                    )
                    for i, sym in enumerate(symbols)
                ),
                decision_latency_ms=(time.perf_counter() - t0) * 1000,
            )
            response = self._gateway.post_decisions(decisions)
            self._held_levels.update({d.symbol: d.target_level for d in decisions.decisions})
            latency_ms = (time.perf_counter() - t0) * 1000
            portfolio = response["portfolio"]
            orders = response.get("orders", [])
            record = StepRecord(
                bar_index=bar_index,
                timestep=str(ts),
                n_symbols=len(symbols),
                n_orders=len(orders),
                n_filled=sum(1 for o in orders if float(o.get("filled_qty") or 0) > 0),
                n_denied=sum(1 for r in response.get("risk", []) if not r.get("approved", True)),
                latency_ms=latency_ms,
                inference_ms=inference_ms,
                observation_checksum=checksum,
                trading_state=str(response.get("trading_state")),
                directive_mode=mode,
                equity=float(portfolio.get("equity", 0.0)),
            )
            steps.append(record)
            if self._on_step is not None:
                self._on_step(record)
        return LoopResult(steps=tuple(steps), directives_published=directives)
