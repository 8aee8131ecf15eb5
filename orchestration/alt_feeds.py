"""Sentiment and macro feeds, batched every hour (HybridRLObservation v2's inputs).

Two hourly-partitioned assets pull one hour from the configured sources (config/rl/features.yaml `alt_data`;
synthetic by default) into the FeedStore under MARLOPS_HOME, through market_data.alt_data.materialise_hour.
The schedule is built from the partitions (the hourly cron is said once, by HOURLY): each run, a few minutes
after the hour, materialises the hour that just ended. Re-running a partition rewrites the same records.
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DefaultScheduleStatus,
    HourlyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)

from market_data.alt_data import MACRO, SENTIMENT, materialise_hour
from market_data.synthetic import symbol_names
from orchestration.resources import MarketDataResource, MarlopsResource

GROUP = "alt_data"
# Hours before this are backfills; the synthetic market starts in 2023.
HOURLY = HourlyPartitionsDefinition(start_date="2023-01-01-00:00", timezone="UTC")
# Minutes after the hour before its batch runs: late records of the hour have arrived.
PUBLICATION_LAG_MINUTES = 5


def _hour(context: AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _universe(market_data: MarketDataResource) -> list[str]:
    """The symbols the synthetic sentiment covers: the synthetic market's universe (file sources carry their own)."""
    return list(symbol_names(market_data.n_symbols))


def _materialise(feed: str, context: AssetExecutionContext, marlops: MarlopsResource,
                 market_data: MarketDataResource) -> MaterializeResult:
    alt = marlops.rl_config().features.alt_data
    start, end = _hour(context)
    facts = materialise_hour(feed, sentiment_spec=alt.sentiment_source, macro_spec=alt.macro_source, seed=alt.seed,
                             symbols=_universe(market_data), state_root=marlops.paths().root, start=start, end=end)
    keys = facts.pop("keys")
    name = "symbols" if feed == SENTIMENT else "series"
    return MaterializeResult(metadata={**facts, name: MetadataValue.json(keys), f"{name}_count": len(keys)})


@asset(group_name=GROUP, partitions_def=HOURLY, kinds={"pandas", "parquet"},
       description="Per-symbol news sentiment (score in [-1, 1], article count) published in the hour, stored under "
                   "<MARLOPS_HOME>/feeds/sentiment; the v2 feature service reads it as of each bar.")
def sentiment_scores(context: AssetExecutionContext, marlops: MarlopsResource,
                     market_data: MarketDataResource) -> MaterializeResult:
    return _materialise(SENTIMENT, context, marlops, market_data)


@asset(group_name=GROUP, partitions_def=HOURLY, kinds={"pandas", "parquet"},
       description="Macro series (rate_10y, rate_2y, credit_spread) published in the hour, stored under "
                   "<MARLOPS_HOME>/feeds/macro; the v2 feature service reads them as of each bar.")
def macro_series(context: AssetExecutionContext, marlops: MarlopsResource,
                 market_data: MarketDataResource) -> MaterializeResult:
    return _materialise(MACRO, context, marlops, market_data)


alt_feeds_job = define_asset_job(
    "alt_feeds_job",
    selection=AssetSelection.groups(GROUP),
    partitions_def=HOURLY,
    description="One hour of sentiment and macro records into the feed store.",
    executor_def=in_process_executor,
)

alt_feeds_hourly = build_schedule_from_partitioned_job(
    alt_feeds_job,
    name="alt_feeds_hourly",
    minute_of_hour=PUBLICATION_LAG_MINUTES,
    default_status=DefaultScheduleStatus.STOPPED,
)
