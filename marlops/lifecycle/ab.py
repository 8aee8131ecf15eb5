"""A/B report of a symbol-subset rotation: which variant earned more per unit risk, and is it more than noise.

The universe is split in two sector-balanced halves that swap variants every period (`cohorts.ab_assignment`), so
each symbol runs under both. Each symbol-bar's P&L is credited to the variant that decided that bar. The P&L of
the first bar after a swap was earned by the position the previous variant chose; with periods of many bars that
carry-over is small and lands on both variants alike, as the halves swap in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.health import chronological, pnl_per_risk, symbol_bar_returns
from marlops.lifecycle.records import BarRecord, SymbolBar

DEFAULT_VARIANT_NAMES: Mapping[str, str] = {"production": "A", "candidate": "B"}
TEST_PAIRED = "wilcoxon_signed_rank"
TEST_WELCH = "welch_t"
TEST_NONE = "none"


@dataclass(frozen=True)
class ABReport:
    variants: dict[str, dict[str, float]]  # label -> pnl, pnl_per_risk, symbol_bars, cost, mean_return, returns
    per_symbol: dict[str, dict[str, float]]  # symbol -> {"A": pnl, "B": pnl}
    difference: float  # pnl_per_risk of the second variant - the first's (B - A)
    p_value: float  # two-sided; 1.0 when no test could run
    significant: bool  # p_value < alpha
    alpha: float
    observations: dict[str, int]  # label -> symbol-bars; "paired_symbols" -> symbols that ran both
    conclusion: str
    test: str = TEST_NONE  # TEST_PAIRED | TEST_WELCH | TEST_NONE

    def as_dict(self) -> dict[str, Any]:
        return {"variants": {k: dict(v) for k, v in self.variants.items()},
                "per_symbol": {k: dict(v) for k, v in self.per_symbol.items()}, "difference": self.difference,
                "p_value": self.p_value, "significant": self.significant, "alpha": self.alpha,
                "observations": dict(self.observations), "conclusion": self.conclusion, "test": self.test}

    def to_markdown(self) -> str:
        labels = list(self.variants)
        lines = ["## A/B report", "", self.conclusion, "",
                 "| variant | P&L | P&L per unit risk | symbol-bars | cost | mean return per symbol-bar |",
                 "|---|---:|---:|---:|---:|---:|"]
        for label in labels:
            v = self.variants[label]
            lines.append(f"| {label} | {v['pnl']:,.2f} | {v['pnl_per_risk']:+.3%} | {int(v['symbol_bars'])} "
                         f"| {v['cost']:,.2f} | {v['mean_return']:+.4%} |")
        test = (f"Test: {self.test}, p={self.p_value:.3g}, alpha={self.alpha:g}, "
                f"paired symbols: {self.observations.get('paired_symbols', 0)}.")
        lines += ["", test, "",
                  "| symbol | " + " | ".join(f"{label} P&L" for label in labels) + " |",
                  "|---|" + "---:|" * len(labels)]
        for symbol, row in self.per_symbol.items():
            lines.append(f"| {symbol} | " + " | ".join(f"{row.get(label, 0.0):,.2f}" for label in labels) + " |")
        return "\n".join(lines) + "\n"


def _min_paired_symbols(alpha: float) -> int:
    """The fewest symbols with which an exact two-sided signed-rank test can reach p < alpha at all (2 / 2^n < alpha):
    6 at 0.05. With fewer, a paired test could never say "significant", so the symbol-bars are compared instead."""
    return math.floor(math.log2(2.0 / alpha)) + 1


def _p(value: float) -> float:
    return float(value) if math.isfinite(value) else 1.0


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def ab_report(
    bars: Sequence[BarRecord],
    *,
    variant_of: Callable[[SymbolBar], str] | None = None,
    alpha: float = 0.05,
    variant_names: Mapping[str, str] | None = None,
) -> ABReport:
    """Compare the two variants of an A/B rotation over `bars`.

    Labels: `variant_of(symbol_bar)` when given, else `variant_names[symbol_bar.variant]` (default
    {"production": "A", "candidate": "B"}); symbol-bars labelled None or "" (e.g. sl_fallback by default) are left
    out. Exactly two labels must remain; the first (in `variant_names` order, else sorted) is the baseline.

    Per variant: pnl, pnl_per_risk (sum(pnl) / mean over bars of sum(|position_value|), as in canary health),
    symbol_bars, cost, mean_return and returns (per symbol-bar return pnl / |previous position_value| over
    symbol-bars that came in holding a position). `difference` = second's pnl_per_risk - first's.

    Significance, two-sided at `alpha`: paired when at least `_min_paired_symbols(alpha)` symbols ran both (6 at
    0.05): per symbol, mean return under the first minus under the second, Wilcoxon signed-rank
    (scipy.stats.wilcoxon). Otherwise Welch's t-test (scipy.stats.ttest_ind(equal_var=False)) over the symbol-bar
    returns, with at least 2 on each side; else no test (p = 1). Raises LifecycleError without two variants.
    """
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise LifecycleError(f"alpha must be in (0, 1), got {alpha!r}")
    names = dict(DEFAULT_VARIANT_NAMES if variant_names is None else variant_names)
    label_of: Callable[[SymbolBar], str | None] = variant_of or (lambda row: names.get(row.variant))
    ordered = chronological(bars)
    found = {label for bar in ordered for row in bar.symbols if (label := label_of(row))}
    preferred = list(dict.fromkeys(names.values())) if (variant_of is None or variant_names is not None) else []
    labels = [label for label in preferred if label in found] + sorted(found - set(preferred))
    if len(labels) != 2:
        raise LifecycleError(f"an A/B report compares two variants; these bars have {labels or 'none'} "
                             "(route both variants first, or pass variant_of)")
    first, second = labels

    per_symbol: dict[str, dict[str, float]] = {}
    for bar in ordered:
        for row in bar.symbols:
            label = label_of(row)
            if label in labels:
                entry = per_symbol.setdefault(row.symbol, {first: 0.0, second: 0.0})
                entry[label] += row.pnl
    returns: dict[str, list[float]] = {first: [], second: []}
    by_symbol: dict[str, dict[str, list[float]]] = {}
    for row, value in symbol_bar_returns(ordered):
        label = label_of(row)
        if label in returns:
            returns[label].append(value)
            by_symbol.setdefault(row.symbol, {first: [], second: []})[label].append(value)
    variants = {}
    for label in labels:
        rows = [row for bar in ordered for row in bar.symbols if label_of(row) == label]
        variants[label] = {
            "pnl": float(sum(r.pnl for r in rows)),
            "pnl_per_risk": pnl_per_risk(ordered, lambda r, label=label: label_of(r) == label),
            "symbol_bars": float(len(rows)),
            "cost": float(sum(r.cost for r in rows)),
            "mean_return": _mean(returns[label]),
            "returns": float(len(returns[label])),
        }
    difference = variants[second]["pnl_per_risk"] - variants[first]["pnl_per_risk"]

    paired = [_mean(v[first]) - _mean(v[second]) for v in by_symbol.values() if v[first] and v[second]]
    test, p_value = TEST_NONE, 1.0
    if len(paired) >= _min_paired_symbols(alpha):
        test = TEST_PAIRED
        # All differences zero: the variants did exactly the same; scipy has no p for that, and "no difference" is 1.
        p_value = _p(stats.wilcoxon(paired).pvalue) if any(d != 0.0 for d in paired) else 1.0
    elif min(len(returns[first]), len(returns[second])) >= 2:
        test = TEST_WELCH
        p_value = _p(stats.ttest_ind(returns[second], returns[first], equal_var=False).pvalue)
    significant = test != TEST_NONE and p_value < alpha
    observations = {first: int(variants[first]["symbol_bars"]), second: int(variants[second]["symbol_bars"]),
                    "paired_symbols": len(paired)}
    return ABReport(variants=variants, per_symbol=dict(sorted(per_symbol.items())), difference=difference,
                    p_value=p_value, significant=significant, alpha=float(alpha), observations=observations,
                    conclusion=_conclusion(first, second, difference, p_value, alpha, significant, test,
                                           observations, len(paired)),
                    test=test)


def _conclusion(first: str, second: str, difference: float, p_value: float, alpha: float, significant: bool,
                test: str, observations: Mapping[str, int], n_paired: int) -> str:
    if difference >= 0:
        head = f"{second} earned {difference:+.2%} per unit risk more than {first}"
    else:
        head = f"{second} earned {-difference:.2%} per unit risk less than {first}"
    n_first, n_second = observations[first], observations[second]
    counts = (f"{n_first} symbol-bars per variant" if n_first == n_second
              else f"{n_first} / {n_second} symbol-bars ({first} / {second})")
    how = {TEST_PAIRED: f"paired Wilcoxon signed-rank over {n_paired} symbols",
           TEST_WELCH: "Welch t-test over symbol-bar returns"}.get(test, "")
    if test == TEST_NONE:
        return f"{head}; not yet significant (too few observations for a test, {counts}): keep rotating"
    if significant:
        return f"{head}; significant (p={p_value:.2g} < {alpha:g}, {counts}, {how})"
    return f"{head}; not yet significant (p={p_value:.2g} >= {alpha:g}, {counts}, {how}): keep rotating"
