"""The Dagster `rollback` job: every symbol back to last-known-good (or the SL fallback) within one bar.

Dagster OSS has no authentication, so a manual run must carry a risk_officer/admin credential; a run the
model-anomaly sensor starts carries no credential and is honoured only when the anomaly is confirmed again
from the recorded bars (a forged sensor run does nothing)."""

from dagster import Config, OpExecutionContext, job, op
from pydantic import Field

from gateway.token_file import load_tokens
from gateway.tokens import grant_for
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.monitor import check_model_anomaly
from marlops.lifecycle.rollback import TARGETS, rollback
from orchestration.resources import MarlopsResource

ROLLBACK_ROLES = ("risk_officer", "admin")


class RollbackConfig(Config):  # type: ignore[misc]
    to: str = Field(default="last-known-good", description=f"one of {', '.join(TARGETS)}")
    reason: str = Field(default="", description="why (audited)")
    credential: str = Field(default="", description="a risk_officer/admin API token (manual runs)")
    trigger: str = Field(default="manual", description="manual | model_anomaly (set by the sensor)")


@op(description="Roll back in one routing change; audited with the principal and reason.")
def roll_back(context: OpExecutionContext, config: RollbackConfig, marlops: MarlopsResource) -> dict:
    with marlops.lifecycle() as lc:
        if config.trigger == "model_anomaly":
            action = check_model_anomaly(lc)  # re-detects from the recorded bars and rolls back only if confirmed
            if action.kind == "none":
                raise LifecycleError("model_anomaly rollback requested but no anomaly is confirmed on the recorded "
                                     "bars: nothing done")
            return action.detail
        if not config.reason.strip():
            raise LifecycleError("a rollback needs a reason (audited)")
        grant = grant_for(load_tokens(lc.ctx.paths.token_store), config.credential.strip()) \
            if config.credential.strip() else None
        if grant is None or grant.role not in ROLLBACK_ROLES:
            raise LifecycleError("a manual rollback needs the credential of a risk_officer or admin token "
                                 f"(`{lc.ctx.paths.tokens_dir}/risk_officer.token`); Dagster has no login, so the "
                                 "token is the proof of who rolled back")
        result = rollback(lc, to=config.to, principal=grant.principal, reason=config.reason)
    context.log.warning(f"rolled back to {result.to}: routing revision {result.routing_revision}")
    return result.as_dict()


@job(description="Every symbol back to last-known-good or the SL fallback within one bar (audited).")
def rollback_job() -> None:
    roll_back()
