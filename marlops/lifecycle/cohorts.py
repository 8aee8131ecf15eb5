"""Which symbols a canary runs on, and which half of the universe each A/B variant trades in a rotation period.

Both are pure functions of (symbols, sectors, seed): the same inputs give the same answer on every machine and in
every process (sha256, never Python's salted `hash`), so a replay, the routing change and the report agree on the
cohort without storing it. A different `seed` (the candidate's run id, say) rotates the choice, so successive
candidates are not always judged on the same few symbols.

Sector balance matters because symbols of one sector move together: a canary drawn from one sector would mostly
measure that sector's day, not the policy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

from marlops.lifecycle.errors import LifecycleError

UNCLASSIFIED = "unclassified"  # the sector of a symbol `sectors` does not name


def _hash_key(seed: str, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def _distinct(symbols: Sequence[str]) -> list[str]:
    if isinstance(symbols, str):
        # A bare string is a sequence of characters: almost certainly a caller's mistake, not 1-letter tickers.
        raise LifecycleError(f"symbols must be a sequence of symbol names, not the string {symbols!r}")
    distinct = list(dict.fromkeys(str(s) for s in symbols))
    if not distinct:
        raise LifecycleError("no symbols to choose from")
    return distinct


def _by_sector(symbols: Sequence[str], sectors: Mapping[str, str], seed: str) -> dict[str, list[str]]:
    """sector -> its symbols in stable hash order (sha256 of "{seed}:{symbol}")."""
    groups: dict[str, list[str]] = {}
    for symbol in symbols:
        groups.setdefault(sectors.get(symbol) or UNCLASSIFIED, []).append(symbol)
    return {sector: sorted(members, key=lambda s: (_hash_key(seed, s), s)) for sector, members in groups.items()}


def cohort_size(n_symbols: int, fraction: float) -> int:
    """max(1, fraction * n_symbols rounded half up): at least one symbol, and an exact half rounds up (5 symbols at
    10% is 1, 25 symbols at 10% is 3), so a canary is never smaller than asked for by more than half a symbol.
    Python's round() rounds halves to even, which would make 25 symbols at 10% a canary of 2."""
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0.0 < fraction <= 1.0):
        raise LifecycleError(f"fraction must be in (0, 1], got {fraction!r}")
    # The 1e-9 keeps float noise (a product landing just under x.5) from turning an exact half into a round-down.
    return min(n_symbols, max(1, math.floor(fraction * n_symbols + 0.5 + 1e-9)))


def _allocate(sizes: Mapping[str, int], n: int, seed: str) -> dict[str, int]:
    """Largest-remainder (Hamilton) apportionment of `n` over the sectors by size, in exact integer arithmetic.

    Each sector first gets floor(n * size / total); the seats left go one each to the largest remainders. Equal
    remainders (the usual case: equal sectors) are ordered by sha256 of "{seed}:sector:{name}", then by name, so the
    seed rotates which sectors are sampled as well as which symbols; with one seed the order is fixed everywhere.
    """
    total = sum(sizes.values())
    seats = {sector: n * size // total for sector, size in sizes.items()}
    left = n - sum(seats.values())
    order = sorted(sizes, key=lambda s: (-(n * sizes[s] % total), _hash_key(seed, f"sector:{s}"), s))
    for sector in order[:left]:
        seats[sector] += 1
    return seats


def canary_cohort(
    symbols: Sequence[str], sectors: Mapping[str, str], *, fraction: float = 0.10, seed: str = ""
) -> tuple[str, ...]:
    """The canary's symbols: `cohort_size(len(symbols), fraction)` of them, sector-balanced, sorted.

    The cohort size is split over the sectors in proportion to their size (largest remainder, see `_allocate`);
    within a sector the symbols are taken in sha256("{seed}:{symbol}") order. Symbols missing from `sectors` form
    the sector "unclassified". Repeated symbols count once. Raises LifecycleError on no symbols or a fraction
    outside (0, 1].
    """
    distinct = _distinct(symbols)
    n = cohort_size(len(distinct), fraction)
    groups = _by_sector(distinct, sectors, seed)
    seats = _allocate({sector: len(members) for sector, members in groups.items()}, n, seed)
    return tuple(sorted(s for sector, members in groups.items() for s in members[: seats[sector]]))


def ab_halves(symbols: Sequence[str], sectors: Mapping[str, str], *, seed: str = "") -> tuple[tuple[str, ...], ...]:
    """The universe split into two sector-balanced halves (each sorted).

    Sectors are walked in name order, each sector's symbols in sha256("{seed}:{symbol}") order, and the symbols are
    dealt alternately to the halves with one running counter: every sector splits within one symbol, and because
    an odd sector's extra symbol goes to whichever half is next, the halves differ by at most one symbol overall.
    """
    distinct = _distinct(symbols)
    groups = _by_sector(distinct, sectors, seed)
    halves: tuple[list[str], list[str]] = ([], [])
    dealt = 0
    for sector in sorted(groups):
        for symbol in groups[sector]:
            halves[dealt % 2].append(symbol)
            dealt += 1
    return tuple(sorted(h) for h in halves)


def ab_assignment(symbols: Sequence[str], sectors: Mapping[str, str], *, period: int, seed: str = "") -> dict[str, str]:
    """symbol -> "A" | "B" for rotation period `period` (0, 1, 2, ...).

    The halves of `ab_halves` swap every period: in an even period the first half trades A, in an odd one B. Over
    an even number of periods every symbol spends equal time on each variant, so a symbol's own drift cancels out
    of the comparison. Raises LifecycleError on no symbols or a negative or non-integer period.
    """
    if isinstance(period, bool) or not isinstance(period, int) or period < 0:
        raise LifecycleError(f"period must be an integer >= 0, got {period!r}")
    first, second = ab_halves(symbols, sectors, seed=seed)
    first_variant, second_variant = ("A", "B") if period % 2 == 0 else ("B", "A")
    out = {s: first_variant for s in first}
    out.update({s: second_variant for s in second})
    return {s: out[s] for s in sorted(out)}
