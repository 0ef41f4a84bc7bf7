"""How a batch splits over processes, and how each process's draws are its share of the whole batch's."""

import pytest
import torch

from ddpmlab.rng import BatchSlice, randint, randn, split_rows


@pytest.mark.parametrize("total,world", [(16, 2), (16, 4), (7, 3), (5, 2), (2, 4), (1, 1)])
def test_split_rows_tiles_the_batch_in_rank_order_with_shares_within_one_row(total, world):
    slices = [split_rows(total, rank, world) for rank in range(world)]
    assert slices[0].start == 0 and slices[-1].stop == total
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))  # contiguous, in rank order
    sizes = [len(s) for s in slices]
    assert sum(sizes) == total and max(sizes) - min(sizes) <= 1
    if total % world == 0:
        assert sizes == [total // world] * world


def test_split_rows_of_seven_over_three():
    assert [(s.start, s.stop) for s in (split_rows(7, r, 3) for r in range(3))] == [(0, 2), (2, 4), (4, 7)]
    with pytest.raises(ValueError):
        split_rows(7, 3, 3)


def test_take_keeps_the_slice_of_a_whole_batch_and_refuses_anything_else():
    rows = BatchSlice(2, 5, 6)
    assert torch.equal(rows.take(torch.arange(6)), torch.tensor([2, 3, 4]))
    assert rows.take(None) is None
    with pytest.raises(ValueError):
        rows.take(torch.arange(3))  # already a slice
    whole = torch.arange(4)
    assert BatchSlice(0, 4, 4).take(whole) is whole


@pytest.mark.parametrize("world", [2, 3])
def test_every_process_draws_its_rows_of_the_one_process_draw(world):
    total = 7
    noise = randn((total, 2, 3), torch.Generator().manual_seed(5), "cpu")
    t = randint(100, total, torch.Generator().manual_seed(5), "cpu")
    for rank in range(world):
        rows = split_rows(total, rank, world)
        assert torch.equal(randn((len(rows), 2, 3), torch.Generator().manual_seed(5), "cpu", rows=rows),
                           noise[rows.start:rows.stop])
        assert torch.equal(randint(100, len(rows), torch.Generator().manual_seed(5), "cpu", rows), t[rows.start:rows.stop])
    assert t.dtype == torch.int64 and 0 <= t.min() and t.max() < 100


def test_a_draw_must_match_its_slice():
    with pytest.raises(ValueError):
        randn((3, 2), torch.Generator().manual_seed(0), "cpu", rows=BatchSlice(0, 2, 4))


def test_the_draws_continue_the_same_stream_on_every_process():
    """After a sliced draw every process's generator stands where one process's does: the next draws agree too."""
    one = torch.Generator().manual_seed(1)
    randn((4, 3), one, "cpu")
    following = torch.rand(2, generator=one)
    for rank in range(2):
        share = torch.Generator().manual_seed(1)
        randn((2, 3), share, "cpu", rows=split_rows(4, rank, 2))
        assert torch.equal(torch.rand(2, generator=share), following)
