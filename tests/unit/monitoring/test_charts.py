"""The dashboard's inline SVG charts: a count axis with several round labels."""

from __future__ import annotations

import re

import pytest

from iotpki.monitoring.charts import bar_chart, value_ticks


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [
        (0, [0, 1]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (13, [0, 5, 10, 15]),
        (100, [0, 20, 40, 60, 80, 100]),
        (1234, [0, 500, 1000, 1500]),
    ],
)
def test_value_ticks_are_round_and_cover_the_peak(peak: int, ticks: list[int]) -> None:
    assert value_ticks(peak) == ticks


def test_expiry_chart_labels_its_count_axis_several_times() -> None:
    weeks = [(f"01-{i + 1:02d}", i % 8) for i in range(26)]
    svg = bar_chart(weeks, title="expiring per week", width=1200)
    axis = re.findall(r'text-anchor="end" fill="#666">(\d+)</text>', svg)
    assert axis == ["0", "2", "4", "6", "8"]
    under = re.findall(r'y="170" font-size="10" fill="#666">([^<]+)</text>', svg)
    assert len(under) >= 8 and under[0] == "01-01"
    assert all(float(h) <= 132 for h in re.findall(r'height="([\d.]+)" fill', svg))
