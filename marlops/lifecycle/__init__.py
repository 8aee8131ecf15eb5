"""The governed lifecycle: paper trading, deployment RFC, approval, canary, rollout, rollback, review, shadow, A/B.

Plain Python; `orchestration/` wraps each step in one Dagster asset, check, sensor or job. See docs/lifecycle.md.
"""
