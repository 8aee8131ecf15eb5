"""The deployment RFC: what a risk officer approves before a candidate goes to staging, canary and rollout.

    rfc = build_rfc(candidate_run_id=run_id, candidate={"symbol_agent": "4", ...}, production={...} | None,
                    metrics={"paper": {"candidate": {...}, "production": {...}}}, risk={...},
                    rollback_plan=[...], artifacts={...}, equity_plot_png=equity_drawdown_png(...))
    render_markdown(rfc)   # Dagster MetadataValue.md: tables, the plot inline as a data-URI image, the digest

The digest is the sha256 of the canonical JSON (sorted keys, no spaces, NaN/inf -> null) of everything the
approver judges: candidate run, candidate and production versions, metrics, risk, rollback plan, artifact
digests and signatures, and the plot's sha256. Not covered: rfc_id (derived from it), digest, created_at.
An approval names the digest it approved, so a changed candidate (a new digest) voids it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from marlops.lifecycle.errors import LifecycleError

# The variants shown first in the metric tables, in this order; any others follow sorted.
VARIANT_ORDER = ("candidate", "production")
SECTION_ORDER = ("held_out", "staging", "paper")
AGENT_ORDER = ("symbol_agent", "master_agent", "sl_fallback")
PLOT_LOCATION = "the `deployment_rfc` asset page in the Dagster UI"


@dataclass(frozen=True)
class DeploymentRFC:
    rfc_id: str  # "RFC-<candidate symbol_agent version>-<digest[:8]>", e.g. "RFC-4-1a2b3c4d"
    candidate_run_id: str  # the MLflow run that produced the candidate
    candidate: dict[str, str]  # agent -> version
    production: dict[str, str] | None  # agent -> version in production now (None: first deployment)
    metrics: dict[str, dict[str, dict[str, float]]]  # section -> variant -> metric -> value (None when not finite)
    risk: dict[str, Any]  # guardrail headroom, drift status, cost ratio, concentration (JSON-able)
    rollback_plan: list[str]  # ordered steps, human readable
    artifacts: dict[str, dict[str, str]]  # agent -> {"sha256", "signature", "key_id"/"public_key_sha256", "artifact"}
    equity_plot_png: bytes | None = None  # candidate-vs-production equity + drawdown (paper window)
    created_at: str = ""  # ISO-8601 UTC
    digest: str = ""  # sha256 hex of the canonical JSON of digest_body()

    @property
    def plot_sha256(self) -> str | None:
        return None if self.equity_plot_png is None else hashlib.sha256(self.equity_plot_png).hexdigest()

    def digest_body(self) -> dict[str, Any]:
        """Everything the digest covers (the plot as its sha256)."""
        return {
            "candidate_run_id": self.candidate_run_id, "candidate": self.candidate, "production": self.production,
            "metrics": self.metrics, "risk": self.risk, "rollback_plan": self.rollback_plan,
            "artifacts": self.artifacts, "equity_plot_sha256": self.plot_sha256,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: every field but the plot bytes (given as equity_plot_sha256)."""
        return {"rfc_id": self.rfc_id, **self.digest_body(), "created_at": self.created_at, "digest": self.digest}


def canonical_json(value: Any) -> str:
    """sort_keys, no spaces; NaN and +-inf become null (after `jsonable`)."""
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types: mappings with str keys, lists, str, bool, int, finite float or None.
    Non-finite floats become None; numpy scalars become int/float; tuples become lists."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    raise LifecycleError(f"not JSON-able in a deployment RFC: {type(value).__name__} {value!r:.80}")


def rfc_digest(rfc: DeploymentRFC) -> str:
    """The sha256 of the canonical JSON of what the RFC asks approval for (see the module docstring)."""
    return hashlib.sha256(canonical_json(rfc.digest_body()).encode()).hexdigest()


def _versions(name: str, raw: Mapping[str, Any] | None, *, required: bool) -> dict[str, str] | None:
    if raw is None:
        if required:
            raise LifecycleError(f"a deployment RFC needs {name} versions (agent -> version)")
        return None
    if not isinstance(raw, Mapping) or not raw:
        raise LifecycleError(f"{name} versions must be a non-empty mapping agent -> version, got {raw!r:.80}")
    return {str(agent): str(version) for agent, version in raw.items()}


def build_rfc(*, candidate_run_id: str, candidate: Mapping[str, Any], production: Mapping[str, Any] | None,
              metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], risk: Mapping[str, Any],
              rollback_plan: Sequence[str], artifacts: Mapping[str, Mapping[str, Any]],
              equity_plot_png: bytes | None = None, now: datetime | None = None) -> DeploymentRFC:
    """The RFC with its digest and id. Values are normalised to JSON types first (non-finite -> None), so an
    RFC read back from the store equals the one built."""
    if not isinstance(candidate_run_id, str) or not candidate_run_id.strip():
        raise LifecycleError("a deployment RFC needs the candidate's MLflow run id")
    cand = _versions("candidate", candidate, required=True)
    assert cand is not None
    if "symbol_agent" not in cand:
        raise LifecycleError(f"candidate versions {cand} name no symbol_agent (the RFC id is built from it)")
    if isinstance(rollback_plan, str) or not all(isinstance(step, str) and step.strip() for step in rollback_plan):
        raise LifecycleError("rollback_plan must be a list of non-blank steps")
    if equity_plot_png is not None and not isinstance(equity_plot_png, (bytes, bytearray)):
        raise LifecycleError(f"equity_plot_png must be PNG bytes, got {type(equity_plot_png).__name__}")
    moment = (now or datetime.now(UTC))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    rfc = DeploymentRFC(
        rfc_id="", candidate_run_id=candidate_run_id.strip(), candidate=cand,
        production=_versions("production", production, required=False),
        metrics=jsonable(dict(metrics)), risk=jsonable(dict(risk)), rollback_plan=[str(s) for s in rollback_plan],
        artifacts={str(agent): {str(k): str(v) for k, v in entry.items()} for agent, entry in artifacts.items()},
        equity_plot_png=None if equity_plot_png is None else bytes(equity_plot_png),
        created_at=moment.astimezone(UTC).isoformat(timespec="seconds"),
    )
    digest = rfc_digest(rfc)
    return replace(rfc, rfc_id=f"RFC-{cand['symbol_agent']}-{digest[:8]}", digest=digest)


# ---- rendering -------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _ordered(keys: Sequence[str] | Any, first: Sequence[str]) -> list[str]:
    keys = list(keys)
    return [k for k in first if k in keys] + sorted(k for k in keys if k not in first)


def _versions_table(rfc: DeploymentRFC) -> list[str]:
    production = rfc.production or {}
    lines = ["| agent | candidate | production |", "| --- | --- | --- |"]
    for agent in _ordered(set(rfc.candidate) | set(production), AGENT_ORDER):
        lines.append(f"| {agent} | {_cell(rfc.candidate.get(agent, '-'))} | "
                     f"{_cell(production.get(agent, '-')) if rfc.production is not None else 'none (first deployment)'} |")
    return lines


def _metrics_tables(rfc: DeploymentRFC) -> list[str]:
    lines: list[str] = []
    for section in _ordered(rfc.metrics, SECTION_ORDER):
        variants = rfc.metrics[section] or {}
        columns = _ordered(variants, VARIANT_ORDER)
        names: list[str] = []
        for variant in columns:
            names.extend(m for m in (variants[variant] or {}) if m not in names)
        lines += ["", f"### {section.replace('_', ' ')}", ""]
        if not columns or not names:
            lines.append("_no metrics_")
            continue
        lines.append("| metric | " + " | ".join(columns) + " |")
        lines.append("| --- |" + " --- |" * len(columns))
        for name in names:
            lines.append(f"| {name} | " + " | ".join(_cell((variants[v] or {}).get(name)) for v in columns) + " |")
    return lines


def render_markdown(rfc: DeploymentRFC, *, inline_plot: bool = True) -> str:
    """Markdown for Dagster's MetadataValue.md. With `inline_plot` the plot is embedded as a data-URI image
    (Dagster renders it on the asset page); without, a line says where to see it (for terminals)."""
    production = ", ".join(f"{a} {v}" for a, v in (rfc.production or {}).items()) or "none (first deployment)"
    lines = [f"# Deployment {rfc.rfc_id}", "",
             f"Candidate run `{rfc.candidate_run_id}`; production now: {production}. Created {rfc.created_at or 'n/a'}.",
             "", "## Versions", "", *_versions_table(rfc), "", "## Metrics: candidate vs production", *_metrics_tables(rfc),
             "", "## Equity and drawdown (paper window)", ""]
    if rfc.equity_plot_png is None:
        lines.append("_no plot_")
    elif inline_plot:
        lines.append(f"![equity](data:image/png;base64,{base64.b64encode(rfc.equity_plot_png).decode()})")
    else:
        lines.append(f"_the plot is on {PLOT_LOCATION} (PNG sha256 `{rfc.plot_sha256}`)_")
    lines += ["", "## Risk assessment", ""]
    if rfc.risk:
        lines += ["| item | value |", "| --- | --- |"]
        lines += [f"| {_cell(key)} | {_cell(rfc.risk[key])} |" for key in sorted(rfc.risk)]
    else:
        lines.append("_no risk assessment_")
    lines += ["", "## Rollback plan", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(rfc.rollback_plan, 1)] or ["_no rollback plan_"]
    lines += ["", "## Artifacts", ""]
    if rfc.artifacts:
        lines += ["| agent | sha256 | signature | key | artifact |", "| --- | --- | --- | --- | --- |"]
        for agent in _ordered(rfc.artifacts, AGENT_ORDER):
            entry = rfc.artifacts[agent]
            key = entry.get("key_id") or entry.get("public_key_sha256") or "n/a"
            lines.append(f"| {agent} | `{entry.get('sha256', 'n/a')}` | `{entry.get('signature', 'n/a')}` | `{key}` | "
                         f"{_cell(entry.get('artifact', 'n/a'))} |")
    else:
        lines.append("_no artifacts_")
    lines += ["", f"**RFC digest** `{rfc.digest}` (sha256 of everything above; an approval is of this digest)", ""]
    return "\n".join(lines)


# ---- the plot ------------------------------------------------------------------------------------------------
def equity_drawdown_png(curves: Mapping[str, Sequence[float]], *, title: str) -> bytes:
    """PNG (7x4 in, 80 dpi) of two panels: each curve's equity, and its drawdown from the running peak in %."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {name: np.asarray(list(values), dtype=float) for name, values in curves.items()}
    series = {name: values for name, values in series.items() if values.size}
    if not series:
        raise LifecycleError(f"equity_drawdown_png({title!r}): no equity curve has any point")
    figure = Figure(figsize=(7, 4), dpi=80)
    FigureCanvasAgg(figure)
    equity_ax, drawdown_ax = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for name, values in series.items():
        peak = np.fmax.accumulate(np.where(np.isfinite(values), values, -np.inf))
        with np.errstate(divide="ignore", invalid="ignore"):
            drawdown = np.where(peak > 0, (values / peak - 1.0) * 100.0, np.nan)
        equity_ax.plot(values, label=name, linewidth=1.2)
        drawdown_ax.plot(drawdown, label=name, linewidth=1.0)
    equity_ax.set_title(title, fontsize=10)
    equity_ax.set_ylabel("equity")
    equity_ax.legend(fontsize=8, loc="best")
    equity_ax.grid(alpha=0.3)
    drawdown_ax.set_ylabel("drawdown %")
    drawdown_ax.set_xlabel("bar")
    drawdown_ax.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
