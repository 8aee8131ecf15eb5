"""Lifecycle sensors: each calls one marlops.lifecycle function. Automatic actions only reduce risk."""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from marlops.lifecycle.monitor import check_canaries, check_model_anomaly, reviews_due
from orchestration.resources import MarlopsResource


def sensors_for(deployment_job: object, review_job: object, rollout_job: object) -> list[object]:
    @sensor(name="rfc_approval_sensor", job=deployment_job, minimum_interval_seconds=30,
            default_status=DefaultSensorStatus.RUNNING,
            description="An RFC approved (CLI or UI) whose canary has not started launches the deployment job.")
    def rfc_approval_sensor(context: SensorEvaluationContext, marlops: MarlopsResource):  # type: ignore[no-untyped-def]
        with marlops.lifecycle() as lc:
            ready = [r for r in lc.store.list_rfcs() if r.status == "approved"
                     and "canary" not in lc.store.stages(r.candidate_run_id)]
        if not ready:
            return SkipReason("no approved RFC waiting for its canary")
        return [RunRequest(run_key=f"{r.rfc_id}:{r.digest[:12]}", tags={"marlops/rfc": r.rfc_id},
                           run_config={"ops": {"rfc_approval": {"config": {"rfc_id": r.rfc_id}}}}) for r in ready]

    @sensor(name="canary_health_sensor", job=rollout_job, minimum_interval_seconds=30,
            default_status=DefaultSensorStatus.RUNNING,
            description="Live canaries judged on the bars `marlops trade` records; a breach moves the canary symbols "
                        "back to production at the next bar, alerts and audits; a canary healthy for its trading "
                        "days launches the rollout.")
    def canary_health_sensor(context: SensorEvaluationContext, marlops: MarlopsResource):  # type: ignore[no-untyped-def]
        with marlops.lifecycle() as lc:
            actions = check_canaries(lc)
        passed = [a for a in actions if a.kind == "canary_passed"]
        if passed:
            return [RunRequest(run_key=f"rollout:{a.candidate_run_id}") for a in passed]
        return SkipReason("; ".join(f"{a.kind} {a.candidate_run_id}: {'; '.join(a.reasons)}" for a in actions)
                          or "every running canary is healthy")

    @sensor(name="model_anomaly_sensor", minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
            description="NaN or out-of-range outputs, a collapsed action distribution or decision errors of "
                        "production roll it back to last-known-good by themselves.")
    def model_anomaly_sensor(context: SensorEvaluationContext, marlops: MarlopsResource):  # type: ignore[no-untyped-def]
        with marlops.lifecycle() as lc:
            action = check_model_anomaly(lc)
        return SkipReason("no anomaly" if action.kind == "none" else f"rolled back: {'; '.join(action.reasons)}")

    @sensor(name="post_deployment_review_sensor", job=review_job, minimum_interval_seconds=300,
            default_status=DefaultSensorStatus.RUNNING,
            description="Two weeks of market time after a rollout, launches its post-deployment review.")
    def post_deployment_review_sensor(context: SensorEvaluationContext, marlops: MarlopsResource):  # type: ignore[no-untyped-def]
        with marlops.lifecycle() as lc:
            due = reviews_due(lc, lc.config.review.trading_days_after_rollout)
        if not due:
            return SkipReason("no review due")
        return [RunRequest(run_key=f"review:{run_id}") for run_id in due]

    return [rfc_approval_sensor, canary_health_sensor, model_anomaly_sensor, post_deployment_review_sensor]
