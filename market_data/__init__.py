"""Market data: synthetic and file sources, a replay clock. Bars are long-format DataFrames (contracts.bars.BAR_COLUMNS)."""
