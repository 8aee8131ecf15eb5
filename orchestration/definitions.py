"""The one Dagster code location. The environment (dev | test) is chosen here, once, from MARLOPS_ENV."""

import os

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from orchestration import alt_feeds, assets, checks, lifecycle_assets, lifecycle_checks
from orchestration.resources import MarketDataResource, MarlopsResource, TrainingResource
from orchestration.rollback_job import rollback_job
from orchestration.sensors import sensors_for

# One process per run: every step imports torch/mlflow; forking a process per step costs more than it buys.
spine_job = define_asset_job(
    "spine_job",
    selection=AssetSelection.groups(assets.GROUP),
    description="Data -> features -> SL + MAPPO training -> registry -> Go/No-Go -> Triton -> staging replay.",
    executor_def=in_process_executor,
)

CANDIDATE_STAGES = AssetSelection.groups(assets.GROUP) | AssetSelection.assets(
    lifecycle_assets.paper_trading, lifecycle_assets.deployment_rfc, lifecycle_assets.rfc_approval)

lifecycle_job = define_asset_job(
    "lifecycle_job",
    selection=CANDIDATE_STAGES,
    description="A new candidate through every gate up to the risk committee: spine -> paper trading -> deployment "
                "RFC -> approval. Never approves: the run stops at `rfc_is_approved` until a risk officer decides.",
    executor_def=in_process_executor,
)

deployment_job = define_asset_job(
    "deployment_job",
    selection=AssetSelection.assets(lifecycle_assets.rfc_approval, lifecycle_assets.canary,
                                    lifecycle_assets.production_rollout),
    description="An approved RFC: approval re-checked (digest) -> canary on 10% of symbols -> production rollout.",
    executor_def=in_process_executor,
)

rollout_job = define_asset_job(
    "rollout_job",
    selection=AssetSelection.assets(lifecycle_assets.production_rollout),
    description="Production rollout after a live canary passed (launched by canary_health_sensor).",
    executor_def=in_process_executor,
)

review_job = define_asset_job(
    "review_job",
    selection=AssetSelection.assets(lifecycle_assets.post_deployment_review),
    description="Post-deployment review, two weeks of market time after the rollout.",
    executor_def=in_process_executor,
)

ab_test_job = define_asset_job(
    "ab_test_job",
    selection=AssetSelection.assets(lifecycle_assets.ab_test),
    description="A/B test of the latest registered candidate against production on rotating symbol halves.",
    executor_def=in_process_executor,
)

# New candidates monthly on the latest data; they stop at the RFC approval like any other (never auto-approved).
monthly_retraining = ScheduleDefinition(
    name="monthly_retraining",
    job=lifecycle_job,
    cron_schedule="0 6 1 * *",
    execution_timezone="America/New_York",
    default_status=DefaultScheduleStatus.STOPPED,
)


def resources_for(environment: str) -> dict[str, object]:
    if environment == "test":
        # Small and fast; same real components.
        return {
            "marlops": MarlopsResource(state_dir=os.environ.get("MARLOPS_HOME", "")),
            "market_data": MarketDataResource(n_symbols=6, n_days=200, replay_days=8),
            "training": TrainingResource(iterations=3, hidden=16),
        }
    if environment == "dev":
        return {"marlops": MarlopsResource(), "market_data": MarketDataResource(), "training": TrainingResource()}
    raise ValueError(f"MARLOPS_ENV must be 'dev' or 'test', got {environment!r}")


defs = Definitions(
    assets=[assets.market_feed, assets.market_bars, assets.feature_table, assets.sl_model, assets.policy_candidate,
            assets.registered_policy, assets.validation_report, assets.triton_deployment, assets.staging_replay,
            lifecycle_assets.paper_trading, lifecycle_assets.deployment_rfc, lifecycle_assets.rfc_approval,
            lifecycle_assets.canary, lifecycle_assets.production_rollout, lifecycle_assets.post_deployment_review,
            lifecycle_assets.ab_test, alt_feeds.sentiment_scores, alt_feeds.macro_series],
    asset_checks=[checks.market_bars_are_valid, checks.feature_table_is_complete, *checks.go_no_go_checks,
                  *lifecycle_checks.lifecycle_checks],
    jobs=[spine_job, lifecycle_job, deployment_job, rollout_job, review_job, rollback_job, ab_test_job,
          alt_feeds.alt_feeds_job],
    schedules=[monthly_retraining, alt_feeds.alt_feeds_hourly],
    sensors=sensors_for(deployment_job, review_job, rollout_job),
    resources=resources_for(os.environ.get("MARLOPS_ENV", "dev")),
)
