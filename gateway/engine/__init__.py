"""The gateway's engine, in parts that each own one thing (after NautilusTrader's split of risk,
execution and state):

  state.py           GatewayState: everything restored at start, persisted with the audit rows that justify it
  kill_switch.py     the trading state machine, the automatic triggers, safe mode and alerts (one lock)
  execution.py       the in-flight ledger: route (concurrently, risk-reducing first), track, fill, recover
  reconciliation.py  the book replaced by the broker's account, mismatches audited
  timestep.py        one timestep as the order flow reads: validate, plan, commit intents, hand to execution
  queries.py         read-only views (portfolio, exposure, status)
  clock.py           the injected clock (wall time and monotonic time)
  latency.py         the latencies the gateway measures, as histograms and recent samples

`gateway.service.GatewayService` wires them together; nothing here knows about HTTP.
"""
