"""Execution gateway: master overlay, risk guardrails, kill switch, order routing, audit trail.

`gateway.domain` holds the pure rules (shared with backtests); everything that touches HTTP, a
broker or a database lives beside it.
"""
