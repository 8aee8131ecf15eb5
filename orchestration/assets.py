"""The spine: market_bars -> feature_table -> sl_model -> policy_candidate -> registered_policy
-> validation_report (Go/No-Go, blocking) -> triton_deployment -> staging_replay.
Each asset calls one marlops.pipeline function."""

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from contracts.features import FeatureSpec
from marlops import pipeline
from marlops.lifecycle.summary import record_gate, record_registration
from orchestration.resources import MarketDataResource, MarlopsResource, TrainingResource

GROUP = "spine"


@asset(group_name=GROUP, kinds={"pandas"},
       description="Every bar the source has: the universe, benchmark and volatility index. In accelerated replay "
                   "its last `lifecycle.replay_trading_days` are the market the lifecycle trades.")
def market_feed(market_data: MarketDataResource) -> Output[pd.DataFrame]:
    bars = pipeline.load_bars(market_data.source, seed=market_data.seed, n_symbols=market_data.n_symbols,
                              n_days=market_data.n_days)
    return Output(bars, metadata=pipeline.bars_metadata(bars))


@asset(group_name=GROUP, kinds={"pandas"},
       description="The bars training, validation and staging may see: the feed without the days withheld for the "
                   "lifecycle (config/rl/lifecycle.yaml replay_trading_days).")
def market_bars(market_feed: pd.DataFrame, marlops: MarlopsResource) -> Output[pd.DataFrame]:
    bars = pipeline.history_bars(market_feed, marlops.rl_config())
    return Output(bars, metadata=pipeline.bars_metadata(bars))


@asset(group_name=GROUP, kinds={"pandas"}, description="Causal market features per (timestamp, symbol).")
def feature_table(market_bars: pd.DataFrame) -> Output[pd.DataFrame]:
    table = pipeline.compute_feature_table(market_bars)
    return Output(table, metadata={"rows": len(table), "columns": MetadataValue.json(list(table.columns))})


@asset(group_name=GROUP, kinds={"numpy"},
       description="SL signal model and the HybridRLObservation spec (version: config/rl/features.yaml, v1 by "
                   "default; v2 adds sentiment and macro features) fitted on the training part (held-out bars "
                   "excluded).")
def sl_model(market_bars: pd.DataFrame, feature_table: pd.DataFrame, marlops: MarlopsResource,
             training: TrainingResource) -> Output[FeatureSpec]:
    spec = pipeline.fit_spec(market_bars, marlops.rl_config(), seed=training.seed)
    return Output(spec, metadata={"feature_spec_hash": spec.spec_hash(),
                                  "symbol_features": MetadataValue.json(list(spec.symbol.names)),
                                  "master_features": MetadataValue.json(list(spec.master.names)),
                                  "observation_version": spec.version})


@asset(group_name=GROUP, kinds={"torch", "mlflow"},
       description="Symbol + master policies trained with MAPPO on the training part; SL-threshold fallback beside them.")
def policy_candidate(context: AssetExecutionContext, market_bars: pd.DataFrame, sl_model: FeatureSpec,
                     marlops: MarlopsResource, training: TrainingResource,
                     market_data: MarketDataResource) -> Output[pipeline.PolicyCandidate]:
    settings = training.settings()

    def progress(iteration: int, metrics: dict[str, float]) -> None:
        if iteration % 10 == 0 or iteration + 1 == settings.iterations:
            context.log.info(f"MAPPO iteration {iteration + 1}/{settings.iterations}: episode return "
                             f"{metrics['episode_return']:+.4f}, Sharpe {metrics['episode_sharpe']:+.2f}")

    # The rows the bars check let through (market_bars_are_valid) enter the dataset id and the MLflow run.
    candidate = pipeline.train_candidate(market_bars, sl_model, marlops.pipeline_context(), training=settings,
                                         on_iteration=progress,
                                         acknowledgements=market_data.reviewed_rows(marlops.project_root))
    return Output(candidate, metadata=candidate.metadata())


@asset(group_name=GROUP, kinds={"mlflow"}, description="Signed artifacts registered in MLflow with alias `candidate`.")
def registered_policy(policy_candidate: pipeline.PolicyCandidate,
                      marlops: MarlopsResource) -> Output[pipeline.RegisteredPolicies]:
    registered = pipeline.register_candidate(policy_candidate, marlops.pipeline_context())
    with marlops.lifecycle() as lc:
        record_registration(lc, registered)
    return Output(registered, metadata=registered.metadata())


@asset(group_name=GROUP, kinds={"pandas", "mlflow"},
       description="Held-out walk-forward evaluation against buy-and-hold and the SL fallback; Go/No-Go verdict.")
def validation_report(market_bars: pd.DataFrame, registered_policy: pipeline.RegisteredPolicies,
                      marlops: MarlopsResource) -> Output[pipeline.ValidationResult]:
    result = pipeline.validate_candidate(market_bars, registered_policy, marlops.pipeline_context())
    report = result.evaluation.report
    with marlops.lifecycle() as lc:
        record_gate(lc, registered_policy.run_id, "validation", result.passed,
                    "" if result.passed else "Go/No-Go failed: " + ", ".join(report.verdict.as_dict()["failed"]))
    metadata = {**result.metadata(), "report": MetadataValue.md(report.to_markdown()),
                "plot": MetadataValue.path(result.files.get("plot", "")),
                "verdict": MetadataValue.json(report.verdict.as_dict())}
    return Output(result, metadata=metadata)


@asset(group_name=GROUP, kinds={"triton"}, description="Exported into the Triton repository and smoke-loaded.")
def triton_deployment(registered_policy: pipeline.RegisteredPolicies, validation_report: pipeline.ValidationResult,
                      marlops: MarlopsResource) -> Output[pipeline.TritonDeployment]:
    deployment = pipeline.deploy_to_triton(registered_policy, marlops.pipeline_context())
    return Output(deployment, metadata=deployment.metadata())


@asset(group_name=GROUP, kinds={"triton", "fastapi"},
       description="Latest replay window through the real Triton + gateway + paper exchange path.")
def staging_replay(market_bars: pd.DataFrame, sl_model: FeatureSpec, registered_policy: pipeline.RegisteredPolicies,
                   triton_deployment: pipeline.TritonDeployment, marlops: MarlopsResource,
                   market_data: MarketDataResource) -> Output[pipeline.ReplaySummary]:
    summary = pipeline.staging_replay(market_bars, registered_policy, triton_deployment, marlops.pipeline_context(),
                                      replay_days=market_data.replay_days)
    with marlops.lifecycle() as lc:
        record_gate(lc, registered_policy.run_id, "staging", summary.audit_chain_ok,
                    "" if summary.audit_chain_ok else "the staging replay's audit chain is broken")
    return Output(summary, metadata=summary.metadata())
