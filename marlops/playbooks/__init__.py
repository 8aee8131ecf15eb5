"""Playbooks as code: what marlops does, by itself, when an alert that names a playbook fires.

definitions.py  the playbooks (pure data: name, what it does, its steps)
runner.py       an Alertmanager notification -> the playbook of each firing alert, run once per alert, recorded
actions.py      the steps' effects: the gateway's operator routes (token from a file) and the lifecycle rollback
store.py        the durable record of every run (marlops state store, table playbook_runs)
service.py      `python -m marlops.playbooks`: the bearer-authenticated webhook Alertmanager posts to
"""
