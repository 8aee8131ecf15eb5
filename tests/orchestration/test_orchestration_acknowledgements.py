"""The spine's blocking bars check reads the market_data resource's acknowledgement file: a reviewed split passes."""

from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetKey, instance_for_test, materialize

from market_data.source import load_market
from orchestration.assets import market_bars, market_feed
from orchestration.checks import market_bars_are_valid
from orchestration.resources import MarketDataResource, MarlopsResource

REPO = Path(__file__).resolve().parents[2]


def _split_file(tmp_path: Path) -> tuple[Path, str]:
    """Bars with an unadjusted 2:1 split of SYM00 (close/previous close 0.5, volume doubled) well before the days the
    lifecycle withholds; the file and the split's session date."""
    bars = load_market("synthetic:planted-alpha", seed=3, n_symbols=4, n_days=220)
    stamps = np.sort(bars["timestamp"].unique())
    mine = bars["symbol"] == "SYM00"
    after = mine & (bars["timestamp"] >= stamps[115])
    (row,) = bars.index[mine & (bars["timestamp"] == stamps[115])]
    (before,) = bars.index[mine & (bars["timestamp"] == stamps[114])]
    bars.loc[after, ["open", "high", "low", "close"]] *= 0.5 / (bars.loc[row, "close"] / bars.loc[before, "close"])
    bars.loc[after, "volume"] *= 2.0
    path = tmp_path / "bars.csv"
    bars.to_csv(path, index=False)
    return path, str(pd.Timestamp(stamps[115]).date())


def _check(source: Path, acknowledgements: str = "") -> object:
    with instance_for_test() as instance:
        result = materialize(
            [market_feed, market_bars, market_bars_are_valid],
            resources={"market_data": MarketDataResource(source=str(source), n_symbols=4, n_days=220,
                                                         acknowledgements=acknowledgements),
                       "marlops": MarlopsResource(project_root=str(REPO))},
            instance=instance, raise_on_error=False,
        )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_bars_check_when_split_then_fails_and_when_acknowledged_in_resource_file_then_passes(tmp_path: Path) -> None:
    source, day = _split_file(tmp_path)
    refused = _check(source)
    assert refused.passed is False and "suspected_split" in refused.metadata["summary"].value
    acks = tmp_path / "acks.csv"
    acks.write_text(f"symbol,date,check,reason,reviewer\nSYM00,{day},suspected_split,exchange notice 2:1,jane.doe\n")
    passed = _check(source, str(acks))
    assert passed.passed is True
    assert passed.metadata["acknowledged_rows"].value == 1
    assert "jane.doe" in passed.metadata["summary"].value
    assert passed.asset_key == AssetKey("market_bars")
