from collections import Counter

import pytest

from market_data.synthetic import SECTORS, symbol_names, synthetic_sectors
from marlops.lifecycle.cohorts import (
    UNCLASSIFIED,
    ab_assignment,
    ab_halves,
    canary_cohort,
    cohort_size,
)
from marlops.lifecycle.errors import LifecycleError

SYMBOLS_20 = symbol_names(20)
SECTORS_20 = synthetic_sectors(SYMBOLS_20)  # 5 sectors of 4


def test_canary_cohort_when_same_inputs_then_same_cohort_as_recorded_on_another_machine() -> None:
    # Hard-coded: a salted hash (Python's hash()) would pass a same-process check and still differ between runs.
    assert canary_cohort(SYMBOLS_20, SECTORS_20) == ("SYM11", "SYM17")
    assert canary_cohort(SYMBOLS_20, SECTORS_20, seed="run-abc") == ("SYM01", "SYM12")
    assert canary_cohort(list(reversed(SYMBOLS_20)), dict(SECTORS_20)) == ("SYM11", "SYM17")


def test_canary_cohort_when_20_symbols_in_5_sectors_at_10pct_then_2_symbols_from_2_sectors() -> None:
    for seed in ("", "a", "b", "run-7"):
        cohort = canary_cohort(SYMBOLS_20, SECTORS_20, fraction=0.10, seed=seed)
        assert len(cohort) == 2
        assert len({SECTORS_20[s] for s in cohort}) == 2
        assert list(cohort) == sorted(cohort)


def test_canary_cohort_when_50_symbols_in_5_sectors_at_10pct_then_one_per_sector() -> None:
    symbols = symbol_names(50)
    sectors = synthetic_sectors(symbols)
    cohort = canary_cohort(symbols, sectors, fraction=0.10, seed="x")
    assert sorted(sectors[s] for s in cohort) == sorted(SECTORS)


def test_canary_cohort_when_sectors_unequal_then_seats_follow_largest_remainder() -> None:
    sectors = {f"T{i}": "tech" for i in range(6)} | {f"E{i}": "energy" for i in range(3)} | {"H0": "health"}
    # n = 5 of 10: quotas tech 3.0, energy 1.5, health 0.5 -> 3, 1, 0 and one seat for a remainder of 0.5.
    for seed in map(str, range(10)):
        counts = Counter(sectors[s] for s in canary_cohort(list(sectors), sectors, fraction=0.5, seed=seed))
        assert counts["tech"] == 3
        assert (counts["energy"], counts["health"]) in {(2, 0), (1, 1)}


def test_canary_cohort_when_seed_changes_then_cohort_and_sectors_rotate() -> None:
    cohorts = {canary_cohort(SYMBOLS_20, SECTORS_20, seed=f"run-{i}") for i in range(12)}
    sector_pairs = {frozenset(SECTORS_20[s] for s in c) for c in cohorts}
    assert len(cohorts) > 6
    assert len(sector_pairs) > 3  # equal remainders are broken by the seed, not always by sector name


def test_canary_cohort_when_symbol_has_no_sector_then_it_is_unclassified_and_balanced_as_one() -> None:
    symbols = ["AAA", "BBB", "CCC", "DDD"]
    sectors = {"AAA": "tech", "BBB": "tech"}
    cohort = canary_cohort(symbols, sectors, fraction=0.5, seed="s")
    assert len(cohort) == 2
    assert len([s for s in cohort if s in sectors]) == 1  # one from tech, one from "unclassified"
    assert UNCLASSIFIED == "unclassified"


@pytest.mark.parametrize(("n", "fraction", "expected"), [(20, 0.1, 2), (25, 0.1, 3), (5, 0.1, 1), (3, 0.01, 1),
                                                         (15, 0.1, 2), (7, 1.0, 7)])
def test_cohort_size_when_fraction_given_then_half_rounds_up_and_at_least_one(n: int, fraction: float,
                                                                              expected: int) -> None:
    assert cohort_size(n, fraction) == expected
    assert len(canary_cohort(symbol_names(n), {}, fraction=fraction)) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, float("nan"), True])
def test_canary_cohort_when_fraction_outside_0_1_then_lifecycle_error(fraction: float) -> None:
    with pytest.raises(LifecycleError, match="fraction"):
        canary_cohort(SYMBOLS_20, SECTORS_20, fraction=fraction)


def test_canary_cohort_when_no_symbols_then_lifecycle_error() -> None:
    with pytest.raises(LifecycleError, match="no symbols"):
        canary_cohort([], {})
    with pytest.raises(LifecycleError, match="string"):
        canary_cohort("AAPL", {})


def test_ab_assignment_when_period_advances_then_halves_swap_and_time_is_equal() -> None:
    periods = [ab_assignment(SYMBOLS_20, SECTORS_20, period=p, seed="ab") for p in range(4)]
    assert all(set(p) == set(SYMBOLS_20) for p in periods)
    assert all(periods[0][s] != periods[1][s] for s in SYMBOLS_20)
    assert periods[0] == periods[2] and periods[1] == periods[3]
    assert all(Counter(p[s] for p in periods) == {"A": 2, "B": 2} for s in SYMBOLS_20)


def test_ab_assignment_when_sectors_given_then_each_sector_and_the_whole_split_evenly() -> None:
    symbols = symbol_names(23)  # sectors of 5, 5, 5, 4, 4: odd sectors must not all tip the same way
    sectors = synthetic_sectors(symbols)
    assignment = ab_assignment(symbols, sectors, period=0, seed="s")
    totals = Counter(assignment.values())
    assert abs(totals["A"] - totals["B"]) <= 1
    for sector in SECTORS:
        split = Counter(v for s, v in assignment.items() if sectors[s] == sector)
        assert abs(split["A"] - split["B"]) <= 1
    first, second = ab_halves(symbols, sectors, seed="s")
    assert {assignment[s] for s in first} == {"A"} and {assignment[s] for s in second} == {"B"}


def test_ab_assignment_when_seed_changes_then_split_changes() -> None:
    assert ab_assignment(SYMBOLS_20, SECTORS_20, period=0, seed="one") != ab_assignment(
        SYMBOLS_20, SECTORS_20, period=0, seed="two")


@pytest.mark.parametrize("period", [-1, 1.5, True])
def test_ab_assignment_when_period_not_a_natural_number_then_lifecycle_error(period: int) -> None:
    with pytest.raises(LifecycleError, match="period"):
        ab_assignment(SYMBOLS_20, SECTORS_20, period=period)
