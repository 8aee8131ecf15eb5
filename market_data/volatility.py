"""The volatility proxy: what the features read as the volatility index (symbol VIX).

Alpaca serves no VIX index, so real bar files often lack one. `apply_volatility_proxy` turns the bars as they
come (a file, a replay, a live feed) into the bars the features read, with the VIX rows filled from the
configured proxy (`contracts.config.VolatilityProxyConfig`, `market_data.volatility_proxy` in serving.yaml):

- `index`    the bars' own VIX rows; they must exist.
- `etf`      a volatility ETF's bars (e.g. VIXY) relabelled as VIX (all of OHLCV); the ETF leaves the
             tradable universe (its rows are gone from the result) and any VIX rows in the input are ignored.
- `realized` annualised realized volatility of `symbol`'s (the benchmark's) 1-bar log returns over the last
             `window` returns, in VIX-like points:

                 vol_t = 100 * sqrt(252) * std_{ddof=1}(r_{t-window+1}, ..., r_t),   r_t = ln(c_t / c_{t-1})

             (252 = daily bars per year). Causal: vol_t uses closes up to and including t only, and it is a
             fixed-order sum over exactly the window (see features.windows), so a trailing window of history
             reproduces the bulk value bit for bit. The first `window` timestamps (and any window touching a
             missing or non-positive close) have no value: their VIX rows carry NaN prices, so the features of
             those bars are incomplete and dropped like any other warm-up row. Input VIX rows are ignored.
             open = high = low = close = vol_t, volume 0.

The proxy used is recorded in the feature spec (`FeatureSpec.volatility_source`, e.g. "realized:SPY:21");
`proxy_from_spec` reads it back so serving applies the same one and subscribes to its inputs.
Realized volatility of the benchmark runs a few points below the implied VIX (no variance risk premium), so
the high-volatility regime (VIX > 25) fires less often on it; the spec's z-score constants are fitted on the
proxy itself.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from contracts.bars import BAR_COLUMNS, BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL
from contracts.config import VolatilityProxyConfig
from contracts.features import FeatureSpec
from market_data.errors import MarketDataError

logger = logging.getLogger(__name__)

CONFIG_KEY = "market_data.volatility_proxy (config/rl/serving.yaml)"
ANNUALIZATION_PERIODS = 252  # daily bars per year
VIX_POINTS = 100.0  # volatility as a fraction -> VIX points
REALIZED_SCALE = VIX_POINTS * math.sqrt(ANNUALIZATION_PERIODS)


class VolatilityProxyError(MarketDataError):
    """The bars lack what the volatility proxy needs (names the proxy and the config key)."""


def proxy_from_spec(spec: FeatureSpec) -> VolatilityProxyConfig:
    """The proxy a feature spec was fitted with (never `auto`): serving applies it and subscribes to its inputs."""
    try:
        return VolatilityProxyConfig.from_name(spec.volatility_source)
    except ValueError as exc:
        raise VolatilityProxyError(f"feature spec: {exc}") from exc


def market_input_symbols(proxy: VolatilityProxyConfig) -> tuple[str, ...]:
    """Symbols the bars must carry besides the tradable ones: the benchmark and the proxy's input
    (VIX for index, e.g. VIXY for etf); what a live feed subscribes to on top of the universe."""
    out = [BENCHMARK_SYMBOL]
    out += [s for s in proxy.input_symbols if s not in out]
    return tuple(out)


def non_tradable_symbols(proxy: VolatilityProxyConfig) -> frozenset[str]:
    """Symbols that are market inputs only: the benchmark, VIX and an etf proxy's ETF."""
    extra = {proxy.symbol} if proxy.source == "etf" else set()
    return frozenset({BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL} | extra)


def proxy_warmup_bars(proxy: VolatilityProxyConfig) -> int:
    """Bars (including the current one) before the proxy has a value: realized needs `window` returns."""
    return proxy.window + 1 if proxy.source == "realized" else 1


def resolve_volatility_proxy(proxy: VolatilityProxyConfig, bars: pd.DataFrame) -> VolatilityProxyConfig:
    """`auto` -> `index` when the bars hold VIX, else `realized` from `proxy.symbol` (warned); others unchanged."""
    if proxy.source != "auto":
        return proxy
    if (bars["symbol"] == VOLATILITY_INDEX_SYMBOL).any():
        return VolatilityProxyConfig(source="index")
    resolved = VolatilityProxyConfig(source="realized", symbol=proxy.symbol, window=proxy.window)
    logger.warning(
        "bars hold no %s series: the volatility input falls back to the proxy %s (annualised %d-bar realized "
        "volatility of %s); set %s to choose another", VOLATILITY_INDEX_SYMBOL, resolved.name, resolved.window,
        resolved.symbol, CONFIG_KEY,
    )
    return resolved


def realized_volatility(close: np.ndarray, window: int) -> np.ndarray:
    """100*sqrt(252)*sample std of the last `window` 1-bar log returns at each row; NaN where undefined.

    Fixed summation order over exactly the window (oldest to newest), so the value at t does not depend on
    how many rows precede the window.
    """
    c = np.asarray(close, dtype=np.float64)
    c = np.where(c > 0, c, np.nan)
    n = len(c)
    out = np.full(n, np.nan)
    if n < window + 1:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.full(n, np.nan)
        r[1:] = np.log(c[1:] / c[:-1])
    m = n - window + 1  # rows with a full window of returns (rows window-1 .. n-1; row window-1's first is r[0]=NaN)
    acc = np.zeros(m)
    for j in range(window):
        acc = acc + r[j : j + m]
    mean = acc / window
    dev = np.zeros(m)
    for j in range(window):
        d = r[j : j + m] - mean
        dev = dev + d * d
    out[window - 1 :] = np.sqrt(dev / (window - 1)) * REALIZED_SCALE
    return out


def _require(bars: pd.DataFrame, symbol: str, proxy: VolatilityProxyConfig) -> None:
    if not (bars["symbol"] == symbol).any():
        raise VolatilityProxyError(
            f"bars hold no {symbol} rows, which the volatility proxy {proxy.name} needs; "
            f"provide them or choose another proxy in {CONFIG_KEY}"
        )


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def apply_volatility_proxy(bars: pd.DataFrame, proxy: VolatilityProxyConfig) -> pd.DataFrame:
    """The bars the features read: VIX rows filled from `proxy` (see the module doc). Deterministic.

    `auto` is resolved against `bars` first. `index` returns `bars` itself (untouched) when VIX rows exist.
    """
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise VolatilityProxyError(f"bars lack columns {missing}")
    proxy = resolve_volatility_proxy(proxy, bars)
    if proxy.source == "index":
        if not (bars["symbol"] == VOLATILITY_INDEX_SYMBOL).any():
            raise VolatilityProxyError(
                f"bars hold no {VOLATILITY_INDEX_SYMBOL} rows, which the volatility proxy index:VIX needs; set "
                f"{CONFIG_KEY} to source: realized (benchmark realized volatility), etf (e.g. symbol: VIXY) or auto"
            )
        return bars
    _require(bars, proxy.symbol, proxy)
    frame = bars.loc[:, list(BAR_COLUMNS)]
    others = frame[frame["symbol"] != VOLATILITY_INDEX_SYMBOL]
    if proxy.source == "etf":
        relabelled = others.assign(symbol=np.where(others["symbol"] == proxy.symbol, VOLATILITY_INDEX_SYMBOL,
                                                   others["symbol"].to_numpy(dtype=object)))
        return _sorted(relabelled)
    # realized: over the frame's own calendar, so a missing benchmark bar leaves its windows undefined.
    calendar = pd.DatetimeIndex(np.sort(frame["timestamp"].unique()))
    source = frame[frame["symbol"] == proxy.symbol].drop_duplicates("timestamp", keep="last")
    close = source.set_index("timestamp")["close"].reindex(calendar).to_numpy(dtype=np.float64, na_value=np.nan)
    vol = realized_volatility(close, proxy.window)
    vix = pd.DataFrame({"symbol": VOLATILITY_INDEX_SYMBOL, "timestamp": calendar, "open": vol, "high": vol,
                        "low": vol, "close": vol, "volume": 0.0})
    vix["timestamp"] = vix["timestamp"].astype(frame["timestamp"].dtype)
    return _sorted(pd.concat([others, vix[list(BAR_COLUMNS)]], ignore_index=True))
