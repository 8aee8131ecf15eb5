"""Grafana dashboards as code (grafanalib) and Grafana's provisioning files for them."""
