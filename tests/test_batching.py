import random

import numpy as np
import pytest

from scniche_jax.batching import first_occurrence, reference_batch_indices


def test_even_split_is_a_partition():
    batches = reference_batch_indices(100, 4)
    assert [b.size for b in batches] == [25] * 4
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(100))


def test_uneven_split_gives_equal_sizes_and_covers_every_cell():
    batches = reference_batch_indices(103, 4)
    assert [b.size for b in batches] == [26] * 4
    assert set(np.concatenate(batches).tolist()) == set(range(103))


def test_split_follows_the_reference_recipe():
    """Written out by hand from REFERENCE §3: fillers drawn first, then one shuffle."""
    n, b = 23, 5
    rng = random.Random(123)
    size, left = n // b, n % b
    fillers = rng.choices(range(n), k=b - left)
    cells = list(range(n))
    rng.shuffle(cells)
    expected = [cells[i * size:(i + 1) * size] for i in range(b)]
    for i in range(left):
        expected[i].append(cells[b * size + i])
    for i, c in enumerate(fillers):
        expected[left + i].append(c)
    got = reference_batch_indices(n, b)
    assert [g.tolist() for g in got] == expected


def test_second_rule_reproduced_when_it_covers_all_cells():
    batches = reference_batch_indices(10, 4)  # left = 2 >= size = 2
    assert [b.size for b in batches] == [3] * 4
    assert set(np.concatenate(batches).tolist()) == set(range(10))


def test_every_split_has_equal_sizes_and_covers_all_cells():
    for n in range(2, 60):
        for b in range(1, n + 1):
            batches = reference_batch_indices(n, b)
            assert len(batches) == b and len({x.size for x in batches}) == 1, (n, b)
            assert set(np.concatenate(batches).tolist()) == set(range(n)), (n, b)


@pytest.mark.parametrize("bad", [0, -1, 101, 2.5, True])
def test_impossible_batch_num(bad):
    with pytest.raises(ValueError, match="batch_num"):
        reference_batch_indices(100, bad)


def test_first_occurrence():
    batches = [np.array([2, 0]), np.array([1, 2])]
    which, row = first_occurrence(batches, 3)
    assert which.tolist() == [0, 1, 0] and row.tolist() == [1, 0, 0]
