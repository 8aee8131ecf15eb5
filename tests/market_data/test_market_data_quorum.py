"""QuorumBarSource: redundant providers vote per symbol; one provider is validated; live alignment and stop.

Replay providers are deterministic (the merge waits for every replay provider); live-style providers are built
here with a real thread and queue, and waited on by polling (tests/polling.py), never a fixed sleep.
"""

import argparse
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.config import FeedConfig, load_rl_config
from market_data.bar_source import BarBatch, ReplayBarSource
from market_data.errors import MarketDataError
from market_data.feed_checks import BAR_INCONSISTENT, BAR_MISSING, FEED_STALE, NO_QUORUM
from market_data.feed_status import (
    ACTIVE,
    ALERT_PROVIDER_QUARANTINED,
    ALERT_PROVIDER_STALE,
    QUARANTINED,
    STALE,
    provider_alert,
)
from market_data.provider_faults import BadPrices, Drop, FaultyProvider, feed_fault_providers
from market_data.quorum import FeedArbiter, QuorumBarSource, validated
from marlops.errors import MarlopsError
from polling import wait_for

SYMBOLS = ("AAA", "BBB", "CCC", "SPY")
N_BARS = 30
WARMUP = 5
STAMPS = pd.date_range("2024-01-01 21:00", periods=N_BARS, freq="D", tz="UTC")
START = STAMPS[WARMUP]
QUARANTINE = provider_alert(ALERT_PROVIDER_QUARANTINED, "iex")
IEX_STALE = provider_alert(ALERT_PROVIDER_STALE, "iex")


def _bars(stamps: pd.DatetimeIndex = STAMPS, symbols: tuple[str, ...] = SYMBOLS) -> pd.DataFrame:
    """Deterministic bars: each symbol a smooth price path with a valid OHLC around its close."""
    rows = []
    for j, symbol in enumerate(symbols):
        for i, ts in enumerate(stamps):
            close = 50.0 * (j + 1) * (1 + 0.01 * np.sin(i / 3 + j))
            rows.append({"symbol": symbol, "timestamp": ts, "open": close * 0.998, "high": close * 1.01,
                         "low": close * 0.99, "close": close, "volume": 1000.0 + i})
    return pd.DataFrame(rows).sort_values(["timestamp", "symbol"]).reset_index(drop=True)


BARS = _bars()


def _replay(name: str, bars: pd.DataFrame = BARS) -> ReplayBarSource:
    return ReplayBarSource(bars, start=START, name=name)


def _run(source: QuorumBarSource, after: pd.Timestamp | None = None) -> list[BarBatch]:
    return list(source.batches(after, threading.Event()))


def _base(ts: pd.Timestamp) -> pd.DataFrame:
    return BARS[BARS["timestamp"] == ts].reset_index(drop=True)


def _alerts(batches: list[BarBatch]) -> list[tuple[int, str, str | None]]:
    return [(i, name, detail) for i, b in enumerate(batches) for name, detail in b.feed.alerts]


# ------------------------------------------------------------------ votes on replay providers


def test_merge_when_three_providers_agree_then_no_flags_and_bars_equal_base():
    source = QuorumBarSource([_replay("sip"), _replay("iex"), _replay("mirror")])
    batches = _run(source)
    assert [b.timestamp for b in batches] == list(STAMPS[WARMUP:])
    for batch in batches:
        assert dict(batch.flags) == {}
        assert batch.feed.providers == {"sip": ACTIVE, "iex": ACTIVE, "mirror": ACTIVE}
        assert batch.feed.alerts == () and batch.feed.quorum == 2
        pd.testing.assert_frame_equal(batch.bars, _base(batch.timestamp))


def test_merge_when_iex_goes_stale_then_it_gets_no_vote_and_provider_stale_alert():
    providers = feed_fault_providers(BARS, start=START, stale=(5, 9), bad=None)
    batches = _run(QuorumBarSource(providers, config=FeedConfig(stale_after_intervals=2)))
    for i in range(5, 10):
        assert dict(batches[i].flags) == {}, "sip and mirror still reach quorum (2 of 3)"
        pd.testing.assert_frame_equal(batches[i].bars, _base(batches[i].timestamp))
    assert _alerts(batches)[0][:2] == (6, IEX_STALE)  # the second bar in a row without a fresh bar
    assert [(i, n, d) for i, n, d in _alerts(batches)][1] == (10, IEX_STALE, None)  # fresh again: cleared
    assert batches[6].feed.providers["iex"] == STALE and batches[5].feed.providers["iex"] == ACTIVE
    assert batches[10].feed.providers["iex"] == ACTIVE
    assert all(QUARANTINE not in dict(b.feed.alerts) for b in batches), "a lagging provider is not a liar"


def test_merge_when_iex_prints_bad_prices_then_quarantined_and_bars_equal_good_providers():
    providers = feed_fault_providers(BARS, start=START, stale=(5, 9), bad=(12, None), factor=1.06)
    batches = _run(QuorumBarSource(providers))
    raised = [(i, d) for i, n, d in _alerts(batches) if n == QUARANTINE]
    assert len(raised) == 1 and raised[0][0] == 12 and raised[0][1] is not None
    assert "+6.00%" in raised[0][1] and "AAA" in raised[0][1]
    for batch in batches[12:]:
        assert batch.feed.providers["iex"] == QUARANTINED
        assert dict(batch.flags) == {}, "every symbol keeps its quorum (sip + mirror, 2 of 3)"
        pd.testing.assert_frame_equal(batch.bars, _base(batch.timestamp))


def test_merge_when_bad_prices_end_then_iex_released_after_k_agreeing_bars():
    providers = feed_fault_providers(BARS, start=START, stale=None, bad=(3, 6))
    batches = _run(QuorumBarSource(providers, config=FeedConfig(release_after_bars=4)))
    events = [(i, d is None) for i, n, d in _alerts(batches) if n == QUARANTINE]
    assert events == [(3, False), (10, True)]  # agreeing again from bar 7: bars 7, 8, 9, 10 -> released at 10
    assert [b.feed.providers["iex"] for b in batches[2:12]] == \
        [ACTIVE] + [QUARANTINED] * 7 + [ACTIVE, ACTIVE]


def test_vote_when_quarantined_provider_disagrees_again_then_release_count_restarts():
    faults = [BadPrices(2, 3, 1.06), BadPrices(6, 6, 1.06)]
    providers = [FaultyProvider(_replay("sip"), name="sip"), FaultyProvider(_replay("iex"), name="iex", faults=faults),
                 FaultyProvider(_replay("mirror"), name="mirror")]
    batches = _run(QuorumBarSource(providers, config=FeedConfig(release_after_bars=3)))
    events = [(i, d is None) for i, n, d in _alerts(batches) if n == QUARANTINE]
    assert events == [(2, False), (9, True)]  # agrees on 4, 5; disagrees on 6; agrees on 7, 8, 9


def test_vote_when_two_providers_disagree_then_no_quorum_with_carried_forward_bar():
    faults = [BadPrices(3, None, 1.05)]
    providers = [FaultyProvider(_replay("a"), name="a"), FaultyProvider(_replay("b"), name="b", faults=faults)]
    batches = _run(QuorumBarSource(providers))
    assert batches[0].feed.quorum == 2
    assert all(dict(b.flags) == {} for b in batches[:3])
    last_good = batches[2].bars.set_index("symbol")["close"]
    for batch in batches[3:6]:
        assert dict(batch.flags) == dict.fromkeys(SYMBOLS, NO_QUORUM)
        bars = batch.bars.set_index("symbol")
        assert list(bars.index) == list(SYMBOLS)
        assert (bars["timestamp"] == batch.timestamp).all() and (bars["volume"] == 0).all()
        for column in ("open", "high", "low", "close"):
            assert bars[column].to_dict() == last_good.to_dict(), "the last accepted close, flat"
        assert batch.feed.providers == {"a": ACTIVE, "b": ACTIVE}, "no quorum: nobody to quarantine against"
    assert batches[3].bars.dtypes.to_dict() == batches[0].bars.dtypes.to_dict()


def test_vote_when_one_symbol_jumps_on_one_provider_only_then_that_provider_quarantined():
    bars = BARS.copy()
    jump = (bars["symbol"] == "BBB") & (bars["timestamp"] == STAMPS[WARMUP + 4])
    bars.loc[jump, ["open", "high", "low", "close"]] *= 1.2
    batches = _run(QuorumBarSource([_replay("sip"), _replay("iex", bars), _replay("mirror")]))
    raised = [(i, d) for i, n, d in _alerts(batches) if n == QUARANTINE and d is not None]
    assert [i for i, _ in raised] == [4] and "BBB" in raised[0][1] and "AAA" not in raised[0][1]
    pd.testing.assert_frame_equal(batches[4].bars, _base(STAMPS[WARMUP + 4]))


def test_merge_when_provider_skips_a_timestamp_then_it_contributes_nothing_for_it():
    skipped = STAMPS[WARMUP + 2]
    gappy = BARS[BARS["timestamp"] != skipped]
    batches = _run(QuorumBarSource([_replay("sip"), _replay("iex", gappy), _replay("mirror")]))
    assert [b.timestamp for b in batches] == list(STAMPS[WARMUP:])
    assert dict(batches[2].flags) == {}
    assert batches[2].feed.provider_missing == {"sip": 0, "iex": len(SYMBOLS), "mirror": 0}
    assert batches[2].feed.missing == dict.fromkeys(SYMBOLS, 1)


def test_vote_when_inconsistent_bar_then_it_gets_no_vote_and_the_others_decide():
    bars = BARS.copy()
    bad = (bars["symbol"] == "CCC") & (bars["timestamp"] == STAMPS[WARMUP + 1])
    bars.loc[bad, "high"] = bars.loc[bad, "low"] / 2
    batches = _run(QuorumBarSource([_replay("sip"), _replay("iex", bars), _replay("mirror")]))
    assert dict(batches[1].flags) == {} and all(b.feed.providers["iex"] == ACTIVE for b in batches)
    pd.testing.assert_frame_equal(batches[1].bars, _base(STAMPS[WARMUP + 1]))


def test_vote_when_every_provider_misses_a_symbol_then_bar_missing_not_no_quorum():
    drop = [Drop(["CCC"], 2, 2)]
    providers = [FaultyProvider(_replay(n), name=n, faults=drop) for n in ("sip", "iex", "mirror")]
    batches = _run(QuorumBarSource(providers))
    assert dict(batches[2].flags) == {"CCC": BAR_MISSING}
    assert batches[2].feed.missing == {"CCC": 3}


def test_quorum_when_more_than_the_providers_then_clear_error():
    with pytest.raises(MarketDataError, match="quorum 3 exceeds the 2"):
        QuorumBarSource([_replay("a"), _replay("b")], config=FeedConfig(quorum=3))
    with pytest.raises(MarketDataError, match="unique"):
        QuorumBarSource([_replay("a"), _replay("a")])


# ------------------------------------------------------------------ one provider: validation only


def test_guard_when_single_provider_misses_a_symbol_then_bar_missing_with_carried_forward_bar():
    provider = FaultyProvider(_replay("sip"), name="sip", faults=[Drop(["BBB"], 3, 4)])
    batches = _run(validated(provider))
    assert batches[0].feed.quorum is None
    previous = batches[2].bars.set_index("symbol")
    for batch in batches[3:5]:
        assert dict(batch.flags) == {"BBB": BAR_MISSING}
        bars = batch.bars.set_index("symbol")
        assert list(bars.index) == list(SYMBOLS)
        carried = bars.loc["BBB"]
        assert carried["close"] == carried["open"] == carried["high"] == carried["low"] == previous.loc["BBB", "close"]
        assert carried["volume"] == 0 and carried["timestamp"] == batch.timestamp
        base = _base(batch.timestamp).set_index("symbol")
        pd.testing.assert_frame_equal(bars.drop(index="BBB"), base.drop(index="BBB"))
    assert dict(batches[5].flags) == {}
    pd.testing.assert_frame_equal(batches[5].bars, _base(batches[5].timestamp))


def test_guard_when_symbol_never_had_an_accepted_bar_then_flagged_and_absent():
    provider = FaultyProvider(_replay("sip"), name="sip", faults=[Drop(["CCC"], 0, 1)])
    guard = validated(provider)  # no history asked: nothing to carry forward yet
    batches = _run(guard)
    assert dict(batches[0].flags) == {"CCC": BAR_MISSING}
    assert "CCC" not in set(batches[0].bars["symbol"])


def test_guard_when_history_read_first_then_first_bar_carries_its_last_close():
    provider = FaultyProvider(_replay("sip"), name="sip", faults=[Drop(["CCC"], 0, 0)])
    guard = validated(provider)
    history = guard.history(None, 3)
    batch = next(iter(guard.batches(None, threading.Event())))
    last = history[history["symbol"] == "CCC"]["close"].iloc[-1]
    assert batch.bars.set_index("symbol").loc["CCC", "close"] == last


def test_guard_when_single_provider_repeats_its_last_bar_then_feed_stale_and_provider_stale():
    provider = feed_fault_providers(BARS, start=START, stale=(2, 4), bad=None)[1]
    batches = _run(validated(provider, config=FeedConfig(stale_after_intervals=1)))
    assert dict(batches[2].flags) == dict.fromkeys(SYMBOLS, FEED_STALE)
    assert batches[2].feed.providers == {"iex": STALE}
    assert (batches[2].bars["close"].to_numpy() == batches[1].bars["close"].to_numpy()).all()
    assert batches[2].feed.alerts[0][0] == IEX_STALE and batches[5].feed.alerts == ((IEX_STALE, None),)


def test_guard_when_bar_inconsistent_then_flagged_and_carried_forward():
    bars = BARS.copy()
    bad = (bars["symbol"] == "AAA") & (bars["timestamp"] == STAMPS[WARMUP + 1])
    bars.loc[bad, "volume"] = -1.0
    batches = _run(validated(_replay("sip", bars)))
    assert dict(batches[1].flags) == {"AAA": BAR_INCONSISTENT}
    assert batches[1].bars.set_index("symbol").loc["AAA", "volume"] == 0.0


def test_guard_when_bars_clean_then_batch_passed_through_and_name_kept():
    guard = validated(_replay("synthetic:x"))
    assert guard.name == "synthetic:x"
    for batch in _run(guard):
        assert dict(batch.flags) == {} and batch.feed.providers == {"synthetic:x": ACTIVE}
        pd.testing.assert_frame_equal(batch.bars, _base(batch.timestamp))


def test_history_when_first_provider_fails_then_next_one_answers():
    class Broken:
        name, live = "broken", False

        def history(self, before, bars):
            raise MarketDataError("down")

    source = QuorumBarSource([Broken(), _replay("sip")])  # type: ignore[list-item]
    pd.testing.assert_frame_equal(source.history(None, 2), _replay("x").history(None, 2))


def test_arbiter_when_live_bar_lags_the_wall_clock_then_feed_stale():
    arbiter = FeedArbiter(["live"], config=FeedConfig(max_clock_lag_seconds=60), live={"live": True})
    ts = STAMPS[WARMUP]
    batch = arbiter.decide(ts, {"live": _base(ts)}, now=ts + pd.Timedelta(seconds=120))
    assert dict(batch.flags) == dict.fromkeys(SYMBOLS, FEED_STALE)


# ------------------------------------------------------------------ live alignment and stop


class LiveProvider:
    """A live-style provider: its bars come from a queue a test fills (a real feed thread stands behind it)."""

    live = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.symbols = SYMBOLS
        self.inbox: queue.Queue[pd.Timestamp] = queue.Queue()
        self.running = threading.Event()
        self.ended = threading.Event()

    def send(self, ts: pd.Timestamp) -> None:
        self.inbox.put(ts)

    def history(self, before, bars):
        return BARS.iloc[0:0]

    def batches(self, after, stop: threading.Event) -> Iterator[BarBatch]:
        self.running.set()
        try:
            while not stop.is_set():
                try:
                    ts = self.inbox.get(timeout=0.02)
                except queue.Empty:
                    continue
                yield BarBatch(timestamp=ts, bars=_base(ts))
        finally:
            self.ended.set()

    def close(self) -> None:
        return None


def test_merge_when_live_provider_is_late_then_bar_emitted_after_grace_without_it():
    sip, mirror, late = LiveProvider("sip"), LiveProvider("mirror"), LiveProvider("late")
    # The wall clock of this market: its bars are fresh (the clock-lag check is another test's business).
    source = QuorumBarSource([sip, mirror, late], config=FeedConfig(grace_seconds=0.3),
                             clock=lambda: STAMPS[11] + pd.Timedelta(seconds=5))
    batches = source.batches(None, threading.Event())
    t0 = time.monotonic()
    sip.send(STAMPS[10])
    mirror.send(STAMPS[10])
    first = next(batches)  # blocks until the grace period has passed without "late"
    assert time.monotonic() - t0 >= 0.3
    assert first.timestamp == STAMPS[10] and dict(first.flags) == {}
    assert first.feed.provider_missing == {"sip": 0, "mirror": 0, "late": len(SYMBOLS)}
    late.send(STAMPS[10])  # after the bar was emitted: dropped
    for provider in (sip, mirror, late):
        provider.send(STAMPS[11])
    second = next(batches)
    assert second.timestamp == STAMPS[11] and second.feed.provider_missing["late"] == 0
    batches.close()
    assert all(not t.is_alive() for t in source.threads()) and source.threads() == []
    assert late.ended.is_set()


def test_merge_when_stop_is_set_then_merge_and_provider_threads_end():
    providers = [LiveProvider("a"), LiveProvider("b")]
    source = QuorumBarSource(providers, config=FeedConfig(grace_seconds=60))
    stop = threading.Event()
    out: list[BarBatch] = []
    consumer = threading.Thread(target=lambda: out.extend(source.batches(None, stop)))
    consumer.start()
    wait_for(lambda: all(p.running.is_set() for p in providers), "both provider threads running")
    threads = source.threads()
    assert len(threads) == 2
    providers[0].send(STAMPS[10])  # "b" never answers: the bar waits for the (long) grace period
    stop.set()
    consumer.join(5)
    assert not consumer.is_alive() and out == []
    assert all(not t.is_alive() for t in threads) and all(p.ended.is_set() for p in providers)


def test_merge_when_replay_provider_is_slow_then_it_is_waited_for_not_graced():
    class SlowReplay(ReplayBarSource):
        gate = threading.Event()

        def batches(self, after, stop):
            for batch in super().batches(after, stop):
                self.gate.wait(5)
                yield batch

    slow = SlowReplay(BARS, start=START, name="slow")
    source = QuorumBarSource([_replay("fast"), slow], config=FeedConfig(grace_seconds=0))
    batches = source.batches(None, threading.Event())
    threading.Timer(0.1, slow.gate.set).start()
    first = next(batches)
    assert dict(first.flags) == {} and first.feed.provider_missing == {"fast": 0, "slow": 0}
    batches.close()


def test_merge_when_every_provider_fails_then_the_error_reaches_the_caller():
    class Failing(ReplayBarSource):
        def batches(self, after, stop):
            raise MarketDataError("feed down")
            yield  # pragma: no cover

    with pytest.raises(MarketDataError, match="feed down"):
        _run(validated(Failing(BARS, start=START, name="f")))


def test_merge_when_one_of_three_providers_fails_then_the_others_carry_on():
    class Failing(ReplayBarSource):
        def batches(self, after, stop):
            raise MarketDataError("feed down")
            yield  # pragma: no cover

    batches = _run(QuorumBarSource([_replay("sip"), Failing(BARS, start=START, name="iex"), _replay("mirror")]))
    assert len(batches) == N_BARS - WARMUP and all(dict(b.flags) == {} for b in batches)
    assert batches[-1].feed.providers["iex"] == STALE


def test_merge_when_resumed_after_a_bar_then_continues_strictly_after_it():
    providers = feed_fault_providers(BARS, start=START)
    batches = _run(QuorumBarSource(providers), after=STAMPS[WARMUP + 3])
    assert batches[0].timestamp == STAMPS[WARMUP + 4]


# ------------------------------------------------------------------ CLI wiring


def _trade_args(*argv: str) -> argparse.Namespace:
    from marlops.trade_cli import add_trade_parser

    parser = argparse.ArgumentParser()
    add_trade_parser(parser.add_subparsers())
    return parser.parse_args(["trade", *argv])


CONFIG = load_rl_config(Path("config/rl"))


def test_build_source_when_two_sources_then_quorum_source_of_both():
    from marlops.trade_cli import build_source

    args = _trade_args("--source", "synthetic:planted-alpha", "--source", "synthetic:no-alpha",
                       "--symbols", "3", "--days", "80")
    source, symbols = build_source(args, CONFIG, None)
    assert isinstance(source, QuorumBarSource)
    assert [p.name for p in source.providers] == ["synthetic:planted-alpha", "synthetic:no-alpha"]
    assert source.arbiter.quorum == 2 and len(symbols) == 3


def test_build_source_when_one_source_then_single_provider_guard_keeps_its_name():
    from marlops.trade_cli import build_source

    source, _ = build_source(_trade_args("--symbols", "3", "--days", "80"), CONFIG, None)
    assert isinstance(source, QuorumBarSource) and source.arbiter.quorum is None
    assert source.name == "synthetic:planted-alpha"


def test_build_source_when_sources_differ_in_universe_then_clear_error(monkeypatch):
    from marlops import trade_cli

    args = _trade_args("--source", "synthetic:planted-alpha", "--source", "synthetic:no-alpha", "--symbols", "3",
                       "--days", "80")
    smaller = _trade_args("--symbols", "2", "--days", "80")  # the second source reads one symbol less
    real = trade_cli._one_source
    monkeypatch.setattr(trade_cli, "_one_source",
                        lambda spec, a, *rest: real(spec, smaller if spec == "synthetic:no-alpha" else a, *rest))
    with pytest.raises(MarlopsError, match="another universe"):
        trade_cli.build_source(args, CONFIG, None)


def test_build_source_when_feed_fault_preset_then_three_named_providers():
    from marlops.trade_cli import build_source

    source, _ = build_source(_trade_args("--source", "synthetic:feed-fault", "--symbols", "3", "--days", "80"),
                             CONFIG, None)
    assert [p.name for p in source.providers] == ["sip", "iex", "mirror"]


def test_build_source_when_two_alpaca_feed_variants_then_providers_read_those_feeds(monkeypatch, tmp_path):
    from marlops.trade_cli import build_source

    monkeypatch.chdir(tmp_path)  # no project .env: only the variables below
    monkeypatch.setenv("APCA_API_KEY_ID", "key")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "secret")
    monkeypatch.delenv("APCA_DATA_STREAM_URL", raising=False)
    monkeypatch.delenv("APCA_DATA_FEED", raising=False)
    args = _trade_args("--source", "alpaca:sip", "--source", "alpaca:iex", "--symbols", "AAPL,MSFT")
    source, symbols = build_source(args, CONFIG, None)
    assert symbols == ("AAPL", "MSFT") and source.arbiter.quorum == 2
    sip, iex = source.providers
    assert (sip.name, sip.settings.feed, sip.settings.stream_url.rsplit("/", 1)[1]) == ("alpaca:sip", "sip", "sip")
    assert (iex.name, iex.settings.feed, iex.settings.stream_url.rsplit("/", 1)[1]) == ("alpaca:iex", "iex", "iex")
    source.close()
