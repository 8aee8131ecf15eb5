"""Synthetic market: market factor (SPY), sector factors, idiosyncratic noise, Markov regimes, a VIX-like index.

Daily bars by default (`frequency="1Day"`, one bar per business day stamped 21:00 UTC). `frequency="1Min"`
gives 1-minute bars over the regular session instead: `n_days` business days, each with `minutes_per_day`
bars (390 = 09:30-16:00 America/New_York; fewer = the session's first minutes), stamped with their close
time in UTC (09:31 ... 16:00 New York, so DST moves the UTC stamps). The intraday model is the daily one
spread over 390 minutes: per-bar drift = daily drift / 390, per-bar volatility = daily volatility / sqrt(390),
regimes switch between days, the VIX-like index mean-reverts and reacts to the market every minute.

Every random draw is made up front from one seeded generator in a fixed order, so the same config gives the
same frame bit for bit, and presets sharing a seed share the same shocks (only the structure differs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.bars import BAR_COLUMNS, BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL

logger = logging.getLogger(__name__)

Preset = Literal["default", "planted-alpha", "no-alpha"]
PRESETS: tuple[str, ...] = ("default", "planted-alpha", "no-alpha")
SECTORS: tuple[str, ...] = ("tech", "financials", "energy", "health", "consumer")
CALM, STRESSED = "calm", "stressed"

BAR_CLOSE_HOUR_UTC = 21  # US equities close 16:00 New York = 21:00 UTC (20:00 in summer; one stamp keeps bars regular)
Frequency = Literal["1Day", "1Min"]
SESSION_TIMEZONE = "America/New_York"
SESSION_OPEN = "09:30"
SESSION_MINUTES = 390  # 09:30-16:00: one regular session of 1-minute bars

# Regime chain: calm persists ~50 days, stress ~12 days; ~20% of days are stressed in the long run.
P_CALM_TO_STRESSED = 0.02
P_STRESSED_TO_CALM = 0.08
MARKET_DRIFT = {CALM: 0.0005, STRESSED: -0.0015}
MARKET_VOL = {CALM: 0.008, STRESSED: 0.022}
SECTOR_VOL = {CALM: 0.005, STRESSED: 0.011}
IDIO_VOL_MULTIPLIER = {CALM: 1.0, STRESSED: 1.8}
VIX_TARGET = {CALM: 14.0, STRESSED: 32.0}
VIX_MEAN_REVERSION = 0.2
VIX_FLOOR = 9.0
# planted-alpha: tomorrow's idiosyncratic move leans toward the sign of today's own return in calm markets
# (momentum) and against it in stressed ones (reversal). The sign flip is learnable from the observation
# (own return x volatility regime) but not by a model that is linear in the features.
PLANTED_MOMENTUM = {CALM: 0.35, STRESSED: -0.35}


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_symbols: int = Field(default=20, ge=1, le=5000)
    n_days: int = Field(default=300, ge=2, le=20000)
    seed: int = 7
    start: str = "2023-01-03"
    preset: Preset = "default"
    frequency: Frequency = "1Day"  # 1Min: n_days sessions of minutes_per_day 1-minute bars each
    minutes_per_day: int = Field(default=SESSION_MINUTES, ge=1, le=SESSION_MINUTES)  # 1Min only

    @property
    def bars_per_day(self) -> int:
        return 1 if self.frequency == "1Day" else self.minutes_per_day

    @field_validator("start")
    @classmethod
    def _start_is_a_date(cls, value: str) -> str:
        try:
            pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"start {value!r} is not a date: {exc}") from exc
        return value


@dataclass(frozen=True)
class SyntheticMarket:
    config: SyntheticConfig
    bars: pd.DataFrame
    sectors: dict[str, str]
    regimes: pd.Series


def synthetic_sectors(symbols: Iterable[str]) -> dict[str, str]:
    """Sector of each synthetic symbol (SYMnn -> SECTORS[nn % 5], as generated); other names are left out."""
    out: dict[str, str] = {}
    for sym in symbols:
        if len(sym) > 3 and sym.startswith("SYM") and sym[3:].isdigit():
            out[sym] = SECTORS[int(sym[3:]) % len(SECTORS)]
    return out


def symbol_names(n_symbols: int) -> tuple[str, ...]:
    width = max(2, len(str(n_symbols - 1)))
    return tuple(f"SYM{i:0{width}d}" for i in range(n_symbols))


def _trading_days(start: str, n_days: int) -> pd.DatetimeIndex:
    days = pd.bdate_range(start=pd.Timestamp(start).normalize(), periods=n_days, tz="UTC")
    return (days + pd.Timedelta(hours=BAR_CLOSE_HOUR_UTC)).as_unit("ns").rename("timestamp")


def _regime_path(uniforms: np.ndarray) -> np.ndarray:
    stressed = np.zeros(len(uniforms), dtype=bool)
    for t in range(1, len(uniforms)):
        switch = P_STRESSED_TO_CALM if stressed[t - 1] else P_CALM_TO_STRESSED
        stressed[t] = (not stressed[t - 1]) if uniforms[t] < switch else stressed[t - 1]
    return stressed


def _by_regime(table: dict[str, float], stressed: np.ndarray) -> np.ndarray:
    return np.where(stressed, table[STRESSED], table[CALM])


def generate_synthetic_market(cfg: SyntheticConfig | None = None) -> SyntheticMarket:
    cfg = cfg or SyntheticConfig()
    if cfg.frequency == "1Min":
        return _generate_intraday(cfg)
    rng = np.random.default_rng(cfg.seed)
    n_days, n_sym = cfg.n_days, cfg.n_symbols
    symbols = symbol_names(n_sym)
    sector_of = np.arange(n_sym) % len(SECTORS)
    n_priced = n_sym + 1  # trading symbols + SPY (VIX is an index level, no OHLC spread)

    # Draw order is part of the determinism contract: append new draws at the end only.
    regime_u = rng.random(n_days)
    market_eps = rng.standard_normal(n_days)
    sector_eps = rng.standard_normal((n_days, len(SECTORS)))
    idio_eps = rng.standard_normal((n_days, n_sym))
    vix_eps = rng.standard_normal(n_days)
    gap_eps = rng.standard_normal((n_days, n_priced))
    high_eps = np.abs(rng.standard_normal((n_days, n_priced)))
    low_eps = np.abs(rng.standard_normal((n_days, n_priced)))
    volume_eps = rng.standard_normal((n_days, n_priced))
    betas = rng.uniform(0.7, 1.3, n_sym)
    idio_vol = rng.uniform(0.010, 0.020, n_sym)
    start_prices = rng.uniform(20.0, 300.0, n_sym)
    base_volume = np.exp(rng.normal(np.log(2e6), 0.5, n_sym))

    stressed = _regime_path(regime_u)
    # no-alpha and planted-alpha keep the volatility regimes (vol is not a return signal) but drop the regime
    # drift: holding the market earns nothing there, so only a real signal can pass an evaluation.
    flat_market = cfg.preset in ("no-alpha", "planted-alpha")
    market_drift = np.zeros(n_days) if flat_market else _by_regime(MARKET_DRIFT, stressed)
    m_vol = _by_regime(MARKET_VOL, stressed)
    s_vol = _by_regime(SECTOR_VOL, stressed)
    i_mult = _by_regime(IDIO_VOL_MULTIPLIER, stressed)

    market_ret = market_drift + m_vol * market_eps
    sector_ret = s_vol[:, None] * sector_eps
    idio_sigma = i_mult[:, None] * idio_vol[None, :]
    sym_ret = betas[None, :] * market_ret[:, None] + sector_ret[:, sector_of] + idio_sigma * idio_eps
    sym_var = (betas[None, :] * m_vol[:, None]) ** 2 + (s_vol**2)[:, None] + idio_sigma**2
    if cfg.preset == "planted-alpha":
        for t in range(1, n_days):
            strength = PLANTED_MOMENTUM[STRESSED] if stressed[t] else PLANTED_MOMENTUM[CALM]
            sym_ret[t] += strength * idio_sigma[t] * np.sign(sym_ret[t - 1])
    if flat_market:
        # Log drift of -variance/2 makes every price a martingale apart from the planted term, if any.
        sym_ret -= sym_var / 2.0
        market_ret = market_ret - m_vol**2 / 2.0

    opens, highs, lows, closes, volumes = _ohlcv(
        start_prices, sym_ret, market_ret, sym_var, m_vol, (gap_eps, high_eps, low_eps, volume_eps), stressed,
        np.append(base_volume, 6e7), sigma_floor=1e-9)

    vix = np.empty(n_days)
    level = VIX_TARGET[CALM]
    for t in range(n_days):
        target = VIX_TARGET[STRESSED] if stressed[t] else VIX_TARGET[CALM]
        # Index rises when the market falls (leverage effect) and reverts toward the regime's level.
        level = level + VIX_MEAN_REVERSION * (target - level) - 1.5 * (market_ret[t] / 0.01) + 0.8 * vix_eps[t]
        level = max(VIX_FLOOR, level)
        vix[t] = round(level, 2)

    timestamps = _trading_days(cfg.start, n_days)
    names = list(symbols) + [BENCHMARK_SYMBOL]
    frames = [
        pd.DataFrame(
            {
                "symbol": np.repeat(np.array(names, dtype=object)[None, :], n_days, axis=0).ravel(),
                "timestamp": np.repeat(timestamps.to_numpy(), n_priced),
                "open": opens.ravel(),
                "high": highs.ravel(),
                "low": lows.ravel(),
                "close": closes.ravel(),
                "volume": volumes.ravel(),
            }
        ),
        pd.DataFrame(
            {
                "symbol": VOLATILITY_INDEX_SYMBOL,
                "timestamp": timestamps.to_numpy(),
                "open": vix,
                "high": vix,
                "low": vix,
                "close": vix,
                "volume": 0.0,
            }
        ),
    ]
    bars = pd.concat(frames, ignore_index=True)
    bars["symbol"] = bars["symbol"].astype(str)
    bars["timestamp"] = pd.to_datetime(bars["timestamp"], utc=True).dt.as_unit("ns")
    bars = bars.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)[list(BAR_COLUMNS)]

    regimes = pd.Series(np.where(stressed, STRESSED, CALM), index=timestamps, name="regime", dtype=str)
    sectors = {sym: SECTORS[sector_of[i]] for i, sym in enumerate(symbols)}
    logger.debug(
        "synthetic market preset=%s seed=%d: %d symbols x %d days, %d stressed days",
        cfg.preset, cfg.seed, n_sym, n_days, int(stressed.sum()),
    )
    return SyntheticMarket(config=cfg, bars=bars, sectors=sectors, regimes=regimes)


# ---------------------------------------------------------------------------------------------- 1-minute bars


def session_minutes(start: str, n_days: int, minutes_per_day: int = SESSION_MINUTES) -> pd.DatetimeIndex:
    """Close times (UTC, ns) of the first `minutes_per_day` 1-minute bars of `n_days` regular sessions
    (business days from `start`, 09:30 America/New_York open; the first bar closes 09:31)."""
    days = pd.bdate_range(start=pd.Timestamp(start).normalize(), periods=n_days)
    opens = pd.DatetimeIndex(days + pd.Timedelta(SESSION_OPEN + ":00")).tz_localize(SESSION_TIMEZONE)
    offsets = pd.to_timedelta(np.arange(1, minutes_per_day + 1), unit="min").as_unit("ns")
    closes = (opens.tz_convert("UTC").as_unit("ns").asi8[:, None] + offsets.asi8[None, :]).ravel()
    return pd.DatetimeIndex(closes, tz="UTC").as_unit("ns").rename("timestamp")


def _generate_intraday(cfg: SyntheticConfig) -> SyntheticMarket:
    rng = np.random.default_rng(cfg.seed)
    n_days, per_day, n_sym = cfg.n_days, cfg.minutes_per_day, cfg.n_symbols
    n_bars = n_days * per_day
    symbols = symbol_names(n_sym)
    sector_of = np.arange(n_sym) % len(SECTORS)
    n_priced = n_sym + 1
    # Per-minute scale of the daily model: drift / 390, volatility / sqrt(390) (a capped session keeps it).
    time_scale = float(SESSION_MINUTES)
    vol_scale = np.sqrt(time_scale)

    # Draw order is part of the determinism contract: append new draws at the end only.
    regime_u = rng.random(n_days)
    market_eps = rng.standard_normal(n_bars)
    sector_eps = rng.standard_normal((n_bars, len(SECTORS)))
    idio_eps = rng.standard_normal((n_bars, n_sym))
    vix_eps = rng.standard_normal(n_bars)
    gap_eps = rng.standard_normal((n_bars, n_priced))
    high_eps = np.abs(rng.standard_normal((n_bars, n_priced)))
    low_eps = np.abs(rng.standard_normal((n_bars, n_priced)))
    volume_eps = rng.standard_normal((n_bars, n_priced))
    betas = rng.uniform(0.7, 1.3, n_sym)
    idio_vol = rng.uniform(0.010, 0.020, n_sym) / vol_scale
    start_prices = rng.uniform(20.0, 300.0, n_sym)
    base_volume = np.exp(rng.normal(np.log(2e6), 0.5, n_sym)) / time_scale

    stressed = np.repeat(_regime_path(regime_u), per_day)  # regimes switch between sessions
    flat_market = cfg.preset in ("no-alpha", "planted-alpha")
    market_drift = np.zeros(n_bars) if flat_market else _by_regime(MARKET_DRIFT, stressed) / time_scale
    m_vol = _by_regime(MARKET_VOL, stressed) / vol_scale
    s_vol = _by_regime(SECTOR_VOL, stressed) / vol_scale
    i_mult = _by_regime(IDIO_VOL_MULTIPLIER, stressed)

    market_ret = market_drift + m_vol * market_eps
    sector_ret = s_vol[:, None] * sector_eps
    idio_sigma = i_mult[:, None] * idio_vol[None, :]
    sym_ret = betas[None, :] * market_ret[:, None] + sector_ret[:, sector_of] + idio_sigma * idio_eps
    sym_var = (betas[None, :] * m_vol[:, None]) ** 2 + (s_vol**2)[:, None] + idio_sigma**2
    if cfg.preset == "planted-alpha":
        strength = np.where(stressed, PLANTED_MOMENTUM[STRESSED], PLANTED_MOMENTUM[CALM])[:, None] * idio_sigma
        for t in range(1, n_bars):
            sym_ret[t] += strength[t] * np.sign(sym_ret[t - 1])
    if flat_market:
        sym_ret -= sym_var / 2.0
        market_ret = market_ret - m_vol**2 / 2.0

    opens, highs, lows, closes, volumes = _ohlcv(
        start_prices, sym_ret, market_ret, sym_var, m_vol, (gap_eps, high_eps, low_eps, volume_eps), stressed,
        np.append(base_volume, 6e7 / time_scale), sigma_floor=1e-12)

    vix = np.empty(n_bars)
    level = VIX_TARGET[CALM]
    reversion = VIX_MEAN_REVERSION / time_scale
    targets = np.where(stressed, VIX_TARGET[STRESSED], VIX_TARGET[CALM])
    shocks = -1.5 * (market_ret / 0.01) + 0.8 * vix_eps / vol_scale
    for t in range(n_bars):
        level = max(VIX_FLOOR, level + reversion * (targets[t] - level) + shocks[t])
        vix[t] = round(level, 2)

    timestamps = session_minutes(cfg.start, n_days, per_day)
    bars = _bars_frame(symbols, timestamps, opens, highs, lows, closes, volumes, vix)
    regimes = pd.Series(np.where(stressed, STRESSED, CALM), index=timestamps, name="regime", dtype=str)
    sectors = {sym: SECTORS[sector_of[i]] for i, sym in enumerate(symbols)}
    logger.debug("synthetic 1Min market preset=%s seed=%d: %d symbols x %d sessions x %d bars", cfg.preset, cfg.seed,
                 n_sym, n_days, per_day)
    return SyntheticMarket(config=cfg, bars=bars, sectors=sectors, regimes=regimes)



def _ohlcv(start_prices: np.ndarray, sym_ret: np.ndarray, market_ret: np.ndarray, sym_var: np.ndarray,
           m_vol: np.ndarray, noise: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], stressed: np.ndarray,
           base_volume: np.ndarray, *, sigma_floor: float) -> tuple[np.ndarray, ...]:
    """Opens, highs, lows, closes and volumes (symbols, then the benchmark at 400) from log returns, per-bar
    variance and the (gap, high, low, volume) noise draws; one rule for daily and intraday bars."""
    gap_eps, high_eps, low_eps, volume_eps = noise
    sym_close = start_prices[None, :] * np.exp(np.cumsum(sym_ret, axis=0))
    spy_close = 400.0 * np.exp(np.cumsum(market_ret))
    closes = np.column_stack([sym_close, spy_close])
    prev_close = np.vstack([np.append(start_prices, 400.0)[None, :], closes[:-1]])
    sigma = np.column_stack([np.sqrt(sym_var), m_vol])
    opens = prev_close * np.exp(0.3 * sigma * gap_eps)
    highs = np.maximum(opens, closes) * np.exp(0.5 * sigma * high_eps)
    lows = np.minimum(opens, closes) * np.exp(-0.5 * sigma * low_eps)
    # Rounding is monotone, so low <= open, close <= high survives it.
    opens, highs, lows, closes = (np.round(a, 4) for a in (opens, highs, lows, closes))
    returns = np.column_stack([sym_ret, market_ret])
    activity = 1.0 + 2.0 * np.abs(returns) / np.maximum(sigma, sigma_floor)
    volumes = np.maximum(1.0, np.round(base_volume[None, :] * activity * np.exp(0.3 * volume_eps)
                                       * np.where(stressed, 1.5, 1.0)[:, None]))
    return opens, highs, lows, closes, volumes

def _bars_frame(symbols: tuple[str, ...], timestamps: pd.DatetimeIndex, opens: np.ndarray, highs: np.ndarray,
                lows: np.ndarray, closes: np.ndarray, volumes: np.ndarray, vix: np.ndarray) -> pd.DataFrame:
    """BAR_COLUMNS sorted by (timestamp, symbol): priced arrays are [T, symbols + SPY]; VIX has no spread.

    Built directly in sorted order (the names sort as SPY < SYM.. < VIX), no sort over millions of rows."""
    names = np.array([*symbols, BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL], dtype=object)
    order = np.argsort(names, kind="stable")
    n_t = len(timestamps)
    width = len(names)

    def grid(priced: np.ndarray, index_value: np.ndarray) -> np.ndarray:
        return np.column_stack([priced, index_value])[:, order].ravel()

    frame = pd.DataFrame({
        "symbol": np.tile(names[order].astype(str), n_t).astype(object),
        "timestamp": pd.DatetimeIndex(np.repeat(timestamps.as_unit("ns").asi8, width).view("datetime64[ns]"),
                                      tz="UTC"),
        "open": grid(opens, vix), "high": grid(highs, vix), "low": grid(lows, vix), "close": grid(closes, vix),
        "volume": grid(volumes, np.zeros(n_t)),
    })
    return frame[list(BAR_COLUMNS)]
