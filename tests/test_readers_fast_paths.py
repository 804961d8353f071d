"""The readers' fast paths equal the plain code they replace."""

import numpy as np
import pytest

from detkit.data.readers.common import display_join, display_joins, group_order

NAMES = ["a.jpg", "sub/b.png", ".hidden.jpg", "../up.jpg", "x//y.jpg", "x/./y.jpg",
         "/abs/c.jpg", "d/", "e/.", "f..g.jpg", "line\nbreak.jpg", "p[v2]/q.jpg", ""]


@pytest.mark.parametrize("folder", ["", ".", "data", "data/", "/root/data", "../data", "/"])
def test_display_joins_equals_display_join(folder):
    plain = ["a.jpg", "sub/b.png", "p[v2]/q.jpg"]
    assert display_joins(folder, plain) == [display_join(folder, n) for n in plain]
    for name in NAMES:                     # one odd name sends all through display_join
        names = plain + [name]
        assert display_joins(folder, names) == [display_join(folder, n) for n in names]
    assert display_joins(folder, []) == []


@pytest.mark.parametrize("count", [1, 7, 30000, 40000, 2 ** 40, 2 ** 62])
def test_group_order_is_the_stable_argsort(count):
    rng = np.random.default_rng(count % 1000)
    groups = rng.integers(0, min(count, 50000), 5000)
    np.testing.assert_array_equal(group_order(groups, count),
                                  np.argsort(groups, kind="stable"))
