"""Pure trading rules: overlay, guardrails, costs, trading state, portfolio, order sizing.

No web framework, broker client or database here, so backtests run exactly the rules the live
gateway runs. `plan_timestep` is the one entry point that combines them.
"""
