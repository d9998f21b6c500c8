"""bench_relay's round order and DLP cost, on made-up runs: no leg always runs in the same
place in its round (a drift over the run does not always favour the same leg), and the cost
is taken per round, against the same code's DLP-off leg."""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_relay_under_test", ROOT / "bench" / "bench_relay.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def legs(bench, *names):
    return [bench.Leg(name, 0, None) for name in names]


def test_each_leg_runs_in_each_place_once_in_as_many_rounds_as_legs(bench):
    five = legs(bench, "postfix", "sealrelay", "sealrelay@base", "sealrelay-dlp", "sealrelay-dlp@base")
    orders = [[leg.name for leg in bench.rotated(five, n)] for n in range(1, 6)]
    assert orders[0] == [leg.name for leg in five]
    for place in range(5):
        assert sorted(order[place] for order in orders) == sorted(leg.name for leg in five)
    assert [leg.name for leg in bench.rotated(five, 6)] == orders[0]


def test_dlp_cost_is_the_median_per_round_loss_against_the_same_codes_leg(bench):
    names = ("postfix", "sealrelay", "sealrelay-dlp", "sealrelay@base", "sealrelay-dlp@base")
    rates = {  # msg/s per round; the base code's DLP costs 20%, this code's 10% then 5% then 50%
        "postfix": (500, 500, 500),
        "sealrelay": (2000, 1600, 2000),
        "sealrelay-dlp": (1800, 1520, 1000),
        "sealrelay@base": (1000, 1000, 1000),
        "sealrelay-dlp@base": (800, 800, 800),
    }
    runs = [
        bench.Run(name, n + 1, 1000, 1000 / rate, 1000 / rate)
        for name, n in itertools.product(names, range(3))
        if (rate := rates[name][n])
    ]
    table = bench.summarize(legs(bench, *names), runs, type("Args", (), {"markdown": False})()).splitlines()
    cost = {row.split()[0]: row.split()[-1] for row in table[1:]}
    assert cost == {
        "postfix": "-",
        "sealrelay": "-",
        "sealrelay-dlp": "10.0%",  # the median of 10%, 5% and 50%; not 1 - median(dlp) / median(off) (24%)
        "sealrelay@base": "-",
        "sealrelay-dlp@base": "20.0%",
    }
