"""Data checks: Great Expectations suites for bars and feature tables, drift statistics, result types."""
