"""Canary health (candidate cohort against the production cohort) and model anomalies, from per-bar records.

Pure: lists of `BarRecord` in, frozen values out, every breach an upper-case code in data. The rules are written
in the docstrings of `canary_health` and `model_anomalies`, so the docs can quote them as the code applies them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.records import BarRecord, SymbolBar

# A position smaller than this (account currency) is float noise, not exposure: no return is computed on it.
POSITION_EPSILON = 1e-9

CANARY_ERROR_RATE = "CANARY_ERROR_RATE"
CANARY_DENIAL_RATE = "CANARY_DENIAL_RATE"
CANARY_COST_RATIO = "CANARY_COST_RATIO"
CANARY_LATENCY = "CANARY_LATENCY"
CANARY_DRAWDOWN = "CANARY_DRAWDOWN"
CANARY_PNL_INFERIOR = "CANARY_PNL_INFERIOR"
CANARY_NO_DATA = "CANARY_NO_DATA"  # not a breach: the reason a health with zero bars is healthy

MODEL_OUTPUT_NAN = "MODEL_OUTPUT_NAN"
MODEL_OUTPUT_RANGE = "MODEL_OUTPUT_RANGE"
MODEL_ACTION_COLLAPSE = "MODEL_ACTION_COLLAPSE"
MODEL_ERROR_RATE = "MODEL_ERROR_RATE"

# Denials that follow the trading state or the master's directive, not the policy: a defensive day denies every
# buy of every cohort that asks. Canary health compares the denials a policy earns by itself.
STATE_DENIALS = frozenset({"DEFENSIVE_MODE", "TRADING_HALTED", "TRADING_REDUCING", "MARKET_CLOSED"})


def policy_denial(row: SymbolBar) -> bool:
    return row.denied and row.denial_code not in STATE_DENIALS


METRIC_KEYS = ("pnl_per_risk", "cost_ratio", "inference_p50_ms", "drawdown", "error_rate", "denial_rate",
               "symbol_bars", "pnl")


# ---- shared arithmetic (also used by marlops.lifecycle.ab) ----------------------------------------------------------
def chronological(bars: Sequence[BarRecord]) -> list[BarRecord]:
    """Bars in bar order (stable), so a store that returns them in another order gives the same numbers."""
    return sorted(bars, key=lambda b: b.bar_index)


def symbol_bar_returns(bars: Sequence[BarRecord]) -> Iterator[tuple[SymbolBar, float]]:
    """(symbol-bar, return) for every symbol-bar that held a position coming into its bar.

    return = pnl / |position_value of the same symbol at its previous bar| (whatever variant held it): the P&L of a
    bar is earned by the position carried into it. Symbol-bars that come in flat are left out, since a flat
    symbol-bar says nothing about the policy's skill and would only pull both cohorts toward zero.
    """
    previous: dict[str, float] = {}
    for bar in chronological(bars):
        for row in bar.symbols:
            held = abs(previous.get(row.symbol, 0.0))
            if held > POSITION_EPSILON and math.isfinite(row.pnl):
                yield row, row.pnl / max(held, POSITION_EPSILON)
            previous[row.symbol] = row.position_value


def pnl_per_risk(bars: Sequence[BarRecord], select: Callable[[SymbolBar], bool]) -> float:
    """sum(pnl) / mean over bars of sum(|position_value|) of the selected symbol-bars; 0 with no exposure.

    The mean runs over the bars in which the selection has at least one symbol-bar (a cohort is not charged for
    bars it was not routed in).
    """
    pnl = 0.0
    exposures: list[float] = []
    for bar in bars:
        rows = [s for s in bar.symbols if select(s)]
        if rows:
            pnl += sum(s.pnl for s in rows)
            exposures.append(sum(abs(s.position_value) for s in rows))
    mean_exposure = sum(exposures) / len(exposures) if exposures else 0.0
    return pnl / mean_exposure if mean_exposure > POSITION_EPSILON else 0.0


def _cohort_drawdown(ordered: Sequence[BarRecord], variant: str) -> float:
    """Largest peak-to-trough fall of the cohort's cumulative P&L (from 0 at the start) over the cohort's capital:
    (cohort symbols / all symbols) * the first bar's equity. 0 when that capital is not positive."""
    all_symbols = {s.symbol for b in ordered for s in b.symbols}
    cohort_symbols = {s.symbol for b in ordered for s in b.symbols if s.variant == variant}
    if not ordered or not all_symbols:
        return 0.0
    capital = len(cohort_symbols) / len(all_symbols) * ordered[0].equity
    if not capital > 0:
        return 0.0
    cumulative = peak = worst = 0.0
    for bar in ordered:
        cumulative += sum(s.pnl for s in bar.symbols if s.variant == variant)
        peak = max(peak, cumulative)
        worst = max(worst, peak - cumulative)
    return worst / capital


def cohort_metrics(bars: Sequence[BarRecord], variant: str) -> dict[str, float]:
    """The routed variant's cohort over `bars`, every value a float:

      pnl_per_risk      sum(pnl) / mean over bars of sum(|position_value|) (0 with no exposure)
      cost_ratio        sum(cost) / sum(traded_notional) (0 if nothing traded)
      inference_p50_ms  median inference_ms over its symbol-bars (0 with none)
      drawdown          max peak-to-trough of cumulative P&L / cohort capital, cohort capital =
                        (cohort symbol count / all symbol count) * first bar's equity
      error_rate        symbol-bars where the routed version failed / symbol-bars
      denial_rate       symbol-bars with a risk denial / symbol-bars
      symbol_bars       its symbol-bars
      pnl               sum(pnl)
    """
    ordered = chronological(bars)
    rows = [s for b in ordered for s in b.symbols if s.variant == variant]
    n = len(rows)
    traded = sum(s.traded_notional for s in rows)
    return {
        "pnl_per_risk": pnl_per_risk(ordered, lambda s: s.variant == variant),
        "cost_ratio": sum(s.cost for s in rows) / traded if traded > 0 else 0.0,
        "inference_p50_ms": float(statistics.median(s.inference_ms for s in rows)) if rows else 0.0,
        "drawdown": _cohort_drawdown(ordered, variant),
        "error_rate": sum(1 for s in rows if s.error) / n if n else 0.0,
        "denial_rate": sum(1 for s in rows if policy_denial(s)) / n if n else 0.0,
        "symbol_bars": float(n),
        "pnl": float(sum(s.pnl for s in rows)),
    }


# ---- canary health --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CanaryHealthRules:
    """Limits of a healthy canary (see `canary_health` for how each is measured)."""

    min_bars: int = 1  # bars before comparisons with the control apply (the error-rate limit applies from bar 1)
    max_error_rate: float = 0.05  # canary symbol-bars where the routed version failed / all canary symbol-bars
    max_denial_rate_excess: float = 0.20  # canary denial rate - control denial rate
    max_cost_ratio: float = 3.0  # canary cost per traded notional / control's (only when both traded)
    max_latency_ratio: float = 3.0  # canary p50 inference ms / control p50
    # The latency comparison needs this many bars with a request from each cohort: on a busy host one request
    # can take 3x another (a cold stub, a neighbour's burst), the median of several cannot.
    min_latency_bars: int = 5
    max_drawdown_excess: float = 0.05  # canary cohort drawdown - control cohort drawdown (fractions of cohort capital)
    pnl_alpha: float = 0.01  # one-sided Welch t-test: canary P&L per unit risk lower than control at this level
    # A denial-rate excess must also be significant: one-sided Fisher exact test at this level. Denials follow the
    # master's directive (a defensive week denies every buy), so one denied order of two is no evidence.
    denial_alpha: float = 0.01
    min_pnl_observations: int = 8  # symbol-bars per cohort before the P&L test applies

    def __post_init__(self) -> None:
        if self.min_bars < 1:
            raise LifecycleError(f"min_bars must be >= 1, got {self.min_bars}")
        if self.min_pnl_observations < 2:
            # Welch's test needs a variance on each side.
            raise LifecycleError(f"min_pnl_observations must be >= 2, got {self.min_pnl_observations}")
        if not 0.0 < self.pnl_alpha < 1.0:
            raise LifecycleError(f"pnl_alpha must be in (0, 1), got {self.pnl_alpha}")
        for name in ("max_error_rate", "max_denial_rate_excess", "max_cost_ratio", "max_latency_ratio",
                     "max_drawdown_excess"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LifecycleError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class HealthFinding:
    code: str
    metric: str
    canary: float
    control: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class CanaryHealth:
    healthy: bool
    findings: tuple[HealthFinding, ...]  # breaches only
    # "canary" / "control" -> METRIC_KEYS; "pnl_test" -> applied (0/1), p_value (1.0 when not applied),
    # canary_observations, control_observations
    metrics: dict[str, dict[str, float]]
    bars: int

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "bars": self.bars, "findings": [asdict(f) for f in self.findings],
                "metrics": {k: dict(v) for k, v in self.metrics.items()}}


def _pnl_test(bars: Sequence[BarRecord], canary: str, control: str, rules: CanaryHealthRules) -> dict[str, float]:
    by_variant: dict[str, list[float]] = {canary: [], control: []}
    for row, value in symbol_bar_returns(bars):
        if row.variant in by_variant:
            by_variant[row.variant].append(value)
    a, b = by_variant[canary], by_variant[control]
    out = {"applied": 0.0, "p_value": 1.0, "canary_observations": float(len(a)),
           "control_observations": float(len(b)), "canary_mean_return": _mean(a), "control_mean_return": _mean(b)}
    if min(len(a), len(b)) < rules.min_pnl_observations:
        return out
    p = float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    if math.isfinite(p):
        # NaN: both cohorts have zero variance; the test has no answer, so it is reported as not applied.
        out.update(applied=1.0, p_value=p)
    return out


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _denial_p_value(canary: dict[str, float], control: dict[str, float]) -> float:
    """One-sided Fisher exact test: are the canary's symbol-bars denied more often than the control's?"""
    def counts(m: dict[str, float]) -> list[int]:
        n = int(m["symbol_bars"])
        denied = int(round(m["denial_rate"] * n))
        return [denied, n - denied]

    return float(stats.fisher_exact([counts(canary), counts(control)], alternative="greater")[1])


def canary_health(
    bars: Sequence[BarRecord],
    rules: CanaryHealthRules = CanaryHealthRules(),
    *,
    canary_variant: str = "candidate",
    control_variant: str = "production",
) -> CanaryHealth:
    """Is the canary cohort (symbols routed to `canary_variant`) healthy next to the control cohort?

    Cohort numbers are `cohort_metrics`. Breaches (each a HealthFinding; healthy = no breach):
      CANARY_ERROR_RATE    canary error_rate > max_error_rate. A hard limit: it applies from the first bar.
    Once `bars` holds at least `min_bars` bars and both cohorts have symbol-bars:
      CANARY_DENIAL_RATE   (denials the policy earns itself: STATE_DENIALS such as DEFENSIVE_MODE follow the master's
                           directive and the trading state, and do not count)
                           canary denial_rate - control denial_rate > max_denial_rate_excess AND the excess is
                           significant: one-sided Fisher exact test on (denied, not denied) symbol-bars of the two
                           cohorts, scipy.stats.fisher_exact(alternative="greater"), p < denial_alpha
      CANARY_COST_RATIO    canary cost_ratio / control cost_ratio > max_cost_ratio, only when both cohorts traded
                           and the control's ratio is > 0
      CANARY_LATENCY       canary inference_p50_ms / control inference_p50_ms > max_latency_ratio (control p50 > 0),
                           once each cohort sent requests in at least min_latency_bars bars
      CANARY_DRAWDOWN      canary drawdown - control drawdown > max_drawdown_excess
      CANARY_PNL_INFERIOR  per symbol-bar returns (pnl / |previous position_value|, over symbol-bars that came in
                           holding a position) of the canary are lower than the control's: one-sided Welch t-test,
                           scipy.stats.ttest_ind(canary, control, equal_var=False, alternative="less"), p < pnl_alpha;
                           only with at least min_pnl_observations such symbol-bars in each cohort.
    No bars at all (CANARY_NO_DATA) is not a breach: the health is healthy, with zero bars and zero metrics.
    """
    ordered = chronological(bars)
    canary = cohort_metrics(ordered, canary_variant)
    control = cohort_metrics(ordered, control_variant)
    test = _pnl_test(ordered, canary_variant, control_variant, rules)
    metrics = {"canary": canary, "control": control, "pnl_test": test}
    findings: list[HealthFinding] = []

    def breach(code: str, metric: str, threshold: float, detail: str, mine: float | None = None,
               theirs: float | None = None) -> None:
        findings.append(HealthFinding(code, metric, canary[metric] if mine is None else mine,
                                      control[metric] if theirs is None else theirs, threshold, detail))

    if canary["symbol_bars"] and canary["error_rate"] > rules.max_error_rate:
        breach(CANARY_ERROR_RATE, "error_rate", rules.max_error_rate,
               f"the canary version failed on {canary['error_rate']:.1%} of its symbol-bars "
               f"(limit {rules.max_error_rate:.1%})")
    comparable = len(ordered) >= rules.min_bars and canary["symbol_bars"] > 0 and control["symbol_bars"] > 0
    if comparable:
        excess = canary["denial_rate"] - control["denial_rate"]
        p_denial = _denial_p_value(canary, control)
        metrics["denial_test"] = {"p_value": p_denial, "excess": excess}
        if excess > rules.max_denial_rate_excess and p_denial < rules.denial_alpha:
            breach(CANARY_DENIAL_RATE, "denial_rate", rules.max_denial_rate_excess,
                   f"risk rules denied {canary['denial_rate']:.1%} of canary symbol-bars against "
                   f"{control['denial_rate']:.1%} of control's (excess {excess:.1%} > {rules.max_denial_rate_excess:.1%}; "
                   f"one-sided Fisher exact p={p_denial:.4g} < {rules.denial_alpha:g})")
        if canary["cost_ratio"] > 0 and control["cost_ratio"] > 0:
            ratio = canary["cost_ratio"] / control["cost_ratio"]
            if ratio > rules.max_cost_ratio:
                breach(CANARY_COST_RATIO, "cost_ratio", rules.max_cost_ratio,
                       f"canary pays {ratio:.2f}x the control's cost per traded notional (limit {rules.max_cost_ratio:g}x)")
        latency_bars = min(sum(1 for b in ordered if b.of_variant(v)) for v in (canary_variant, control_variant))
        if control["inference_p50_ms"] > 0 and latency_bars >= rules.min_latency_bars:
            ratio = canary["inference_p50_ms"] / control["inference_p50_ms"]
            if ratio > rules.max_latency_ratio:
                breach(CANARY_LATENCY, "inference_p50_ms", rules.max_latency_ratio,
                       f"canary p50 inference {canary['inference_p50_ms']:.1f} ms is {ratio:.2f}x the control's "
                       f"{control['inference_p50_ms']:.1f} ms (limit {rules.max_latency_ratio:g}x)")
        excess = canary["drawdown"] - control["drawdown"]
        if excess > rules.max_drawdown_excess:
            breach(CANARY_DRAWDOWN, "drawdown", rules.max_drawdown_excess,
                   f"canary cohort drawdown {canary['drawdown']:.2%} exceeds control's {control['drawdown']:.2%} by "
                   f"{excess:.2%} of cohort capital (limit {rules.max_drawdown_excess:.2%})")
        if test["applied"] and test["p_value"] < rules.pnl_alpha:
            breach(CANARY_PNL_INFERIOR, "pnl_per_risk", rules.pnl_alpha,
                   f"canary returns per symbol-bar (mean {test['canary_mean_return']:+.4%}, "
                   f"n={int(test['canary_observations'])}) are below control's "
                   f"(mean {test['control_mean_return']:+.4%}, n={int(test['control_observations'])}): one-sided "
                   f"Welch t-test p={test['p_value']:.4g} < {rules.pnl_alpha:g}")
    return CanaryHealth(healthy=not findings, findings=tuple(findings), metrics=metrics, bars=len(ordered))


# ---- model anomalies ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnomalyRules:
    """Limits on what a policy version outputs over the last `window_bars` bars (see `model_anomalies`)."""

    window_bars: int = 3
    max_error_rate: float = 0.05
    # Normalized entropy in [0, 1] of the chosen-action histogram over the window's symbol-bars of a version:
    # below it (and certain, see min_collapse_confidence) = collapsed.
    min_action_entropy: float = 0.05
    # A collapse is judged only on at least this many symbol-bars (never fewer than 2): one symbol-bar has zero
    # entropy by construction and would always look collapsed.
    min_symbol_bars_for_collapse: int = 2
    probability_tolerance: float = 1e-3  # probabilities must be finite, in [0, 1], summing to 1 within this
    # Mean over the version's symbol-bars of max(probabilities) above which it counts as certain of its action.
    min_collapse_confidence: float = 0.99

    def __post_init__(self) -> None:
        if self.window_bars < 1:
            raise LifecycleError(f"window_bars must be >= 1, got {self.window_bars}")
        if not 0.0 <= self.min_action_entropy <= 1.0:
            raise LifecycleError(f"min_action_entropy must be in [0, 1], got {self.min_action_entropy}")
        if not 0.0 <= self.min_collapse_confidence <= 1.0:
            raise LifecycleError(f"min_collapse_confidence must be in [0, 1], got {self.min_collapse_confidence}")
        if not (self.probability_tolerance >= 0 and self.max_error_rate >= 0):
            raise LifecycleError("probability_tolerance and max_error_rate must be >= 0")


@dataclass(frozen=True)
class Anomaly:
    code: str
    policy_version: str
    detail: str
    value: float
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _where(rows: Sequence[SymbolBar], limit: int = 3) -> str:
    shown = ", ".join(f"{r.symbol}@{r.bar_index}" for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def normalized_entropy(actions: Sequence[int], n_actions: int) -> float:
    """Shannon entropy of the action histogram / log(n_actions): 0 = always the same action, 1 = uniform."""
    if n_actions < 2 or not actions:
        return 0.0
    counts: dict[int, int] = {}
    for a in actions:
        counts[a] = counts.get(a, 0) + 1
    total = len(actions)
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return entropy / math.log(n_actions)


def _output_anomalies(version: str, rows: Sequence[SymbolBar], rules: AnomalyRules) -> list[Anomaly]:
    found: list[Anomaly] = []
    def is_finite(r: SymbolBar) -> bool:
        return all(math.isfinite(p) for p in r.probabilities)

    non_finite = [r for r in rows if not is_finite(r)]
    if non_finite:
        found.append(Anomaly(MODEL_OUTPUT_NAN, version,
                             f"{len(non_finite)} of {len(rows)} symbol-bars have non-finite probabilities "
                             f"({_where(non_finite)})", float(len(non_finite)), 0.0))
    finite = [r for r in rows if is_finite(r)]
    tol = rules.probability_tolerance

    def out_of_range(r: SymbolBar) -> bool:
        probs = r.probabilities
        return (not probs or any(p < -tol or p > 1.0 + tol for p in probs)
                or abs(sum(probs) - 1.0) > tol or not 0 <= r.action < len(probs))

    bad = [r for r in finite if out_of_range(r)]
    if bad:
        first = bad[0]
        found.append(Anomaly(MODEL_OUTPUT_RANGE, version,
                             f"{len(bad)} of {len(rows)} symbol-bars have probabilities outside [0, 1], not summing "
                             f"to 1 within {tol:g}, or an action outside the probability vector ({_where(bad)}; "
                             f"first: action {first.action}, probabilities {list(first.probabilities)})",
                             float(len(bad)), tol))
    valid = [r for r in finite if not out_of_range(r)]
    if len(valid) >= max(2, rules.min_symbol_bars_for_collapse):
        n_actions = max(len(r.probabilities) for r in valid)
        entropy = normalized_entropy([r.action for r in valid], n_actions)
        confidence = sum(max(r.probabilities) for r in valid) / len(valid)
        if entropy < rules.min_action_entropy and confidence > rules.min_collapse_confidence:
            found.append(Anomaly(MODEL_ACTION_COLLAPSE, version,
                                 f"chose {sorted({r.action for r in valid})} on all {len(valid)} symbol-bars "
                                 f"(normalized entropy {entropy:.3f} < {rules.min_action_entropy:g}) with mean top "
                                 f"probability {confidence:.4f} > {rules.min_collapse_confidence:g}: certain of one "
                                 "action whatever the symbol", entropy, rules.min_action_entropy))
    return found


def model_anomalies(
    bars: Sequence[BarRecord],
    rules: AnomalyRules = AnomalyRules(),
    *,
    variants: Sequence[str] = ("production", "candidate"),
) -> tuple[Anomaly, ...]:
    """Anomalies of the policies routed as `variants`, over the last `window_bars` bars (by bar_index).

    Outputs are judged per acting policy_version, on the symbol-bars of those variants that did not fail (a failed
    symbol-bar was decided by the fallback, or by nobody, and its probabilities are not the routed model's):
      MODEL_OUTPUT_NAN       a probability is NaN or infinite (value: how many symbol-bars)
      MODEL_OUTPUT_RANGE     a probability outside [0, 1], probabilities not summing to 1 within
                             probability_tolerance, no probabilities, or the chosen action not an index of the
                             probability vector (value: how many symbol-bars)
      MODEL_ACTION_COLLAPSE  over at least max(2, min_symbol_bars_for_collapse) valid symbol-bars, the normalized
                             entropy of the chosen actions is below min_action_entropy AND the mean top probability
                             is above min_collapse_confidence (0.99). A flat market can legitimately make a policy
                             hold on every symbol; that is only a collapse when the policy is also certain of the
                             one action everywhere, i.e. it no longer reads its inputs (value: the entropy).
    Errors are judged per routed variant, since a failed symbol-bar's acting version is the fallback's:
      MODEL_ERROR_RATE       failed symbol-bars / symbol-bars of the variant > max_error_rate; the anomaly names the
                             version the variant answered with in the window (its non-failed symbol-bars' version,
                             or the variant's name when that is not one version).
    Returned in the order: per version (sorted) its output anomalies, then error rates per variant (as given).
    """
    ordered = chronological(bars)
    window_indices = sorted({b.bar_index for b in ordered})[-rules.window_bars:]
    in_window = set(window_indices)
    watched = set(variants)
    rows = [s for b in ordered if b.bar_index in in_window for s in b.symbols if s.variant in watched]
    by_version: dict[str, list[SymbolBar]] = {}
    for row in rows:
        if not row.error:
            by_version.setdefault(row.policy_version, []).append(row)
    found: list[Anomaly] = []
    for version in sorted(by_version):
        found.extend(_output_anomalies(version, by_version[version], rules))
    for variant in variants:
        mine = [r for r in rows if r.variant == variant]
        if not mine:
            continue
        failed = [r for r in mine if r.error]
        rate = len(failed) / len(mine)
        if rate > rules.max_error_rate:
            answered = {r.policy_version for r in mine if not r.error}
            version = next(iter(answered)) if len(answered) == 1 else variant
            found.append(Anomaly(MODEL_ERROR_RATE, version,
                                 f"variant {variant} failed to answer on {len(failed)} of {len(mine)} symbol-bars "
                                 f"in the last {len(window_indices)} bars ({_where(failed)})",
                                 rate, rules.max_error_rate))
    return tuple(found)

