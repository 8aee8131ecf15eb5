"""The hourly sentiment/macro assets and their schedule, with real Dagster materialisations into a real store."""

import os
from pathlib import Path

import pandas as pd
from dagster import AssetKey, build_asset_context, instance_for_test, materialize, validate_run_config

from market_data.alt_data import MACRO, SENTIMENT, FeedStore, SyntheticMacroSource, SyntheticSentimentSource
from market_data.synthetic import symbol_names
from orchestration.alt_feeds import HOURLY, alt_feeds_hourly, alt_feeds_job, macro_series, sentiment_scores
from orchestration.resources import MarketDataResource, MarlopsResource

REPO = Path(__file__).resolve().parents[2]
HOUR = "2024-03-04-14:00"
START = pd.Timestamp("2024-03-04 14:00", tz="UTC")


def _resources(state: Path) -> dict[str, object]:
    return {"marlops": MarlopsResource(project_root=str(REPO), state_dir=str(state)),
            "market_data": MarketDataResource(n_symbols=4)}


def test_materialize_when_hour_partition_runs_then_store_holds_that_hour_and_metadata_says_so(tmp_path: Path) -> None:
    with instance_for_test() as instance:
        result = materialize([sentiment_scores, macro_series], resources=_resources(tmp_path), partition_key=HOUR,
                             instance=instance)
    assert result.success
    events = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    sentiment = events[AssetKey("sentiment_scores")]
    assert sentiment["rows"].value == 4 and sentiment["symbols"].value == list(symbol_names(4))
    assert sentiment["latest_timestamp"].value == START.isoformat()
    # config/rl/features.yaml: synthetic macro, published once a day at 14:00 UTC.
    assert events[AssetKey("macro_series")]["rows"].value == 3
    store = FeedStore.under(tmp_path)
    seed = 11
    pd.testing.assert_frame_equal(store.read(SENTIMENT),
                                  SyntheticSentimentSource(symbol_names(4), seed=seed).sentiment(START, START + pd.Timedelta(hours=1)))
    pd.testing.assert_frame_equal(store.read(MACRO), SyntheticMacroSource(seed=seed).macro(START, START + pd.Timedelta(hours=1)))


def test_asset_when_same_partition_rerun_then_store_unchanged(tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    for _ in range(2):
        with build_asset_context(partition_key=HOUR, resources=resources) as context:
            sentiment_scores(context)
    stored = FeedStore.under(tmp_path).read(SENTIMENT)
    assert len(stored) == 4 and stored["timestamp"].eq(START).all()


def test_schedule_when_hour_has_ended_then_it_runs_that_hour_five_minutes_later() -> None:
    assert alt_feeds_hourly.cron_schedule == "5 * * * *"
    assert alt_feeds_hourly.job_name == alt_feeds_job.name == "alt_feeds_job"
    keys = HOURLY.get_partition_keys(current_time=pd.Timestamp("2024-03-04 15:05", tz="UTC").to_pydatetime())
    assert keys[-1] == HOUR  # the last complete hour


def test_definitions_when_loaded_then_hourly_feed_job_and_schedule_are_registered(monkeypatch) -> None:
    monkeypatch.setenv("MARLOPS_ENV", os.environ.get("MARLOPS_ENV", "test"))
    from orchestration.definitions import defs

    assert defs.resolve_job_def("alt_feeds_job") is not None
    assert "alt_feeds_hourly" in {s.name for s in defs.schedules}
    job = defs.resolve_job_def("alt_feeds_job")
    assert validate_run_config(job, {}) is not None
    assert {AssetKey("sentiment_scores"), AssetKey("macro_series")} <= set(job.asset_layer.asset_graph.get_all_asset_keys())
