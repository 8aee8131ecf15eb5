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

from orchestration import assets, checks
from orchestration.resources import MarketDataResource, MarlopsResource, TrainingResource

spine_job = define_asset_job(
    "spine_job",
    selection=AssetSelection.groups(assets.GROUP),
    description="Data -> features -> SL + MAPPO training -> registry -> Go/No-Go -> Triton -> staging replay.",
    # One process: every step imports torch/mlflow; forking a process per step costs more than it buys.
    executor_def=in_process_executor,
)

monthly_retraining = ScheduleDefinition(
    name="monthly_retraining",
    job=spine_job,
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
    assets=[assets.market_bars, assets.feature_table, assets.sl_model, assets.policy_candidate,
            assets.registered_policy, assets.validation_report, assets.triton_deployment, assets.staging_replay],
    asset_checks=[checks.market_bars_are_valid, checks.feature_table_is_complete, *checks.go_no_go_checks],
    jobs=[spine_job],
    schedules=[monthly_retraining],
    resources=resources_for(os.environ.get("MARLOPS_ENV", "dev")),
)
