import torch

from monet_utils.image_pool import ImagePool


def batch(value, n=2):
    return torch.full((n, 1, 2, 2), float(value))


def test_size_zero_passes_images_through():
    images = torch.randn(3, 1, 2, 2)
    assert torch.equal(ImagePool(0).query(images), images)


def test_returns_new_images_while_filling_and_stops_growing():
    pool = ImagePool(4, seed=0)
    assert torch.equal(pool.query(batch(1)), batch(1))
    assert torch.equal(pool.query(batch(2)), batch(2))
    assert len(pool.images) == 4
    for value in range(3, 20):
        pool.query(batch(value))
    assert len(pool.images) == 4


def test_full_pool_swaps_about_half_the_time():
    pool = ImagePool(4, seed=0)
    pool.query(torch.arange(4.0).view(4, 1, 1, 1))  # pool holds 0..3
    swapped = 0
    for value in range(100, 300):
        out = pool.query(torch.full((1, 1, 1, 1), float(value)))
        if out.item() != value:
            swapped += 1
            assert value in [img.item() for img in pool.images]  # the new image took the old one's slot
    assert 70 < swapped < 130


def test_query_detaches():
    pool = ImagePool(2)
    x = torch.randn(2, 1, 2, 2, requires_grad=True)
    assert not pool.query(x * 2).requires_grad


def test_state_round_trip_repeats_the_same_choices():
    pool = ImagePool(3, seed=5)
    for value in range(6):
        pool.query(batch(value))
    restored = ImagePool(3, seed=99)
    restored.load_state_dict(pool.state_dict())
    for value in range(10, 30):
        assert torch.equal(pool.query(batch(value)), restored.query(batch(value)))
