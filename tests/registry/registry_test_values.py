"""Constants shared by the registry tests (a uniquely named module: test helpers share one import namespace)."""

FEATURE_SPEC_HASH = "f" * 64
DATASET_ID = "bars-2026-01-02_2026-10-30"
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
