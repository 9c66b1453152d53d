import torch

from distgan.log import Stats, image_grid


def test_stats_means_and_totals_with_a_fake_two_rank_sum():
    stats = Stats()
    for v in (1.0, 3.0):
        stats.report("loss/D/real", torch.tensor(v))
    stats.report("data/skipped", torch.tensor(2.0), total=True)
    # Pretend a second rank reported the same: the all-reduce doubles sums and counts.
    out = stats.reduce(lambda t: t * 2)
    assert out == {"loss/D/real": 2.0, "data/skipped": 4.0}
    assert stats.reduce(lambda t: t) == {}, "reduce starts a new interval"


def test_image_grid_layout():
    images = torch.linspace(-1, 1, 5 * 1 * 4 * 4).reshape(5, 1, 4, 4)
    grid = image_grid(images, nrow=3, pad=1)
    assert grid.shape == (2 * 6, 3 * 6, 3) and grid.dtype.name == "uint8"
    assert (grid[6:, 12:] == 255).all(), "the missing sixth cell is blank"
