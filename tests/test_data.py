import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from monet_utils import data, kaggle_inputs
from monet_utils.config import ConfigError, CycleGANConfig
from monet_utils.data import (DataError, EpochSampler, build_dataset, find_data_dir, list_images, load_rgb,
                              make_train_loader, readable_images)

from .conftest import KAGGLE_DATA, write_images


@pytest.fixture
def no_default_locations(monkeypatch, tmp_path):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setattr(kaggle_inputs, "KAGGLE_INPUT", tmp_path / "kaggle_input")
    monkeypatch.setattr(data, "LOCAL_DATA", tmp_path / "local")
    return tmp_path / "kaggle_input"


def kaggle_dataset(folder: Path) -> Path:
    write_images(folder / "photo_jpg", 2)
    write_images(folder / "monet_jpg", 1)
    return folder


def test_search_order_explicit_then_env_then_kaggle_then_local(dataset_dir, tmp_path, monkeypatch,
                                                               no_default_locations):
    other = kaggle_dataset(tmp_path / "other")
    monkeypatch.setattr(data, "LOCAL_DATA", other)
    assert find_data_dir() == other
    attached = kaggle_dataset(no_default_locations / "gan-getting-started")
    assert find_data_dir() == attached
    monkeypatch.setenv("DATA_DIR", str(other))
    assert find_data_dir() == other
    assert find_data_dir(dataset_dir) == dataset_dir


@pytest.mark.parametrize("mounted_at", ["gan-getting-started", "competitions/gan-getting-started"])
def test_the_competition_data_is_found_wherever_kaggle_mounts_it(no_default_locations, mounted_at):
    """Kaggle has mounted it at /kaggle/input/<slug>; newer notebooks see /kaggle/input/competitions/<slug>.
    Another attached input with a copy of the data (a notebook's output) comes second."""
    inputs = no_default_locations
    kaggle_dataset(inputs / "notebooks" / "painter" / "monet-run" / "data")
    (inputs / "notebooks" / "painter" / "monet-run" / "checkpoints").mkdir()
    assert find_data_dir() == inputs / "notebooks" / "painter" / "monet-run" / "data"  # the only one yet
    competition = kaggle_dataset(inputs / mounted_at)
    assert find_data_dir() == competition


def test_the_search_goes_no_deeper_than_its_bound(no_default_locations):
    kaggle_dataset(no_default_locations / "a" / "b" / "c" / "d" / "e" / "f")
    with pytest.raises(DataError, match="no dataset found"):
        find_data_dir()


def test_missing_dataset_error_names_every_path_and_the_layout(tmp_path, no_default_locations):
    empty = tmp_path / "local"
    (empty / "photo_jpg").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        find_data_dir()
    message = str(info.value)
    assert "kaggle_input" in message and "does not exist" in message
    assert "photo_jpg/ holds no images" in message and "no monet_jpg/" in message
    assert "'photo_jpg/' and 'monet_jpg/'" in message


def test_explicit_path_is_the_only_one_tried(tmp_path, dataset_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(dataset_dir))
    with pytest.raises(DataError, match="nowhere"):
        find_data_dir(tmp_path / "nowhere")


def test_unreadable_and_truncated_files_are_skipped_with_one_warning(tmp_path):
    folder = tmp_path / "photos"
    good = write_images(folder, 3, size=(64, 64))
    (folder / "broken.jpg").write_bytes(b"not an image")
    data_bytes = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data_bytes[: len(data_bytes) // 2])  # header intact, pixels cut
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = readable_images(folder)
    assert paths == good
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 unreadable image(s) of 5" in message and "broken.jpg" in message and "truncated.jpg" in message


def test_a_folder_of_only_broken_files_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable images"):
        readable_images(tmp_path)


def test_grayscale_rgba_png_and_odd_sizes_become_rgb_tensors(tmp_path, tiny_config):
    root = tmp_path / "mixed"
    write_images(root / "photo_jpg", 2, size=(50, 30), mode="L", prefix="gray")
    write_images(root / "photo_jpg", 2, size=(100, 80), mode="RGBA", suffix=".png", prefix="rgba")
    write_images(root / "monet_jpg", 2, size=(300, 200), suffix=".png")
    assert load_rgb(list_images(root / "photo_jpg")[0]).shape == (30, 50, 3)
    dataset = build_dataset(tiny_config, root)
    assert len(dataset) == 4
    for i in range(4):
        photo, monet = dataset[i]
        assert photo.shape == monet.shape == (3, 32, 32)
        assert photo.dtype == torch.float32 and -1 <= photo.min() and photo.max() <= 1


def test_samples_depend_on_epoch_and_index_only(dataset_dir, tiny_config):
    dataset = build_dataset(tiny_config, dataset_dir)
    first = dataset[2]
    dataset[0], dataset[5]  # other items in between change nothing
    assert all(torch.equal(a, b) for a, b in zip(first, dataset[2]))
    dataset.set_epoch(1)
    assert not torch.equal(first[0], dataset[2][0])  # another epoch, another crop/flip/painting


def test_paintings_are_drawn_independently_of_photos(dataset_dir, tiny_config):
    dataset = build_dataset(tiny_config, dataset_dir)
    monet_means = {round(dataset[i][1].mean().item(), 4) for i in range(6) for _ in [dataset.set_epoch(i)]}
    assert len(monet_means) > 1


def test_epoch_sampler_covers_every_photo_and_can_start_part_way():
    sampler = EpochSampler(10, batch_size=2, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(10))
    sampler.set_epoch(0, start_batch=2)
    assert list(sampler) == order[4:] and len(sampler) == 6
    sampler.set_epoch(1)
    assert list(sampler) != order


@pytest.mark.parametrize("world_size", [2, 4])
def test_sharded_samplers_split_every_batch_of_one_epoch_without_overlap(world_size):
    """13 photos, global batch 4: 3 whole batches. The ranks' shares of batch b are together
    exactly batch b of the one-process order, and resuming at a batch gives the same shares."""
    single = list(EpochSampler(13, batch_size=4, seed=5))
    shards = [EpochSampler(13, batch_size=4, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    share = 4 // world_size
    per_rank = [list(s) for s in shards]
    assert all(len(p) == len(s) == 3 * share for p, s in zip(per_rank, shards))
    for b in range(3):
        assert sum((p[b * share:(b + 1) * share] for p in per_rank), []) == single[b * 4:(b + 1) * 4]
    seen = sum(per_rank, [])
    assert len(seen) == len(set(seen)) == 12  # disjoint; the 13th photo waits for another epoch
    for s in shards:
        s.set_epoch(0, start_batch=1)
    assert [list(s) for s in shards] == [p[share:] for p in per_rank]
    with pytest.raises(ValueError, match="divide evenly"):
        EpochSampler(13, batch_size=4, world_size=3)


@pytest.mark.parametrize("data_path", ["loader", "memory"])
def test_two_ranks_get_the_halves_of_each_one_process_batch(dataset_dir, tiny_config, data_path):
    config = tiny_config.replace(batch_size=4, image_size=32)
    dataset = build_dataset(config, dataset_dir)
    whole = list(make_train_loader(config, dataset, data_path))
    halves = [list(make_train_loader(config, dataset, data_path, rank=r, world_size=2)) for r in range(2)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 1  # 6 photos, batch 4
    for domain in (0, 1):  # photos and paintings, crops and flips included
        assert torch.equal(torch.cat([halves[0][0][domain], halves[1][0][domain]]), whole[0][domain])


def test_batches_do_not_depend_on_worker_count(dataset_dir, tiny_config):
    dataset = build_dataset(tiny_config, dataset_dir)
    single = [b[0] for b in make_train_loader(tiny_config, dataset)]
    multi = [b[0] for b in make_train_loader(tiny_config.replace(num_workers=2), dataset)]
    assert len(single) == 3
    assert all(torch.equal(a, b) for a, b in zip(single, multi))


def test_fewer_photos_than_a_batch_is_an_error(dataset_dir, tiny_config):
    with pytest.raises(DataError, match="fewer than batch_size=8"):
        build_dataset(tiny_config.replace(batch_size=8), dataset_dir)


def test_holding_out_every_painting_is_an_error(dataset_dir, tiny_config):
    with pytest.raises(DataError, match="holdout_paintings=3 leaves none of the 3 readable paintings .* at most 2"):
        build_dataset(tiny_config.replace(holdout_paintings=3), dataset_dir)


@pytest.mark.skipif(not KAGGLE_DATA.is_dir(), reason="the Kaggle data in ../shared/kaggle-data is absent")
def test_real_kaggle_data_loads(tiny_config):
    assert len(list_images(KAGGLE_DATA / "photo_jpg")) == 7038
    assert len(list_images(KAGGLE_DATA / "monet_jpg")) == 300
    assert load_rgb(list_images(KAGGLE_DATA / "monet_jpg")[0]).shape == (256, 256, 3)
    config = tiny_config.replace(image_size=64)
    dataset = data.UnpairedDataset(list_images(KAGGLE_DATA / "photo_jpg")[:8],
                                   list_images(KAGGLE_DATA / "monet_jpg"), data.train_transform(64))
    photo, monet = next(iter(make_train_loader(config, dataset)))
    assert photo.shape == monet.shape == (2, 3, 64, 64)


def coloured_dataset(tmp_path, tiny_config, count=6):
    """Photo i is a flat image of grey level 10 * (i + 1), so a batch tells which photos it holds."""
    from PIL import Image
    root = tmp_path / "flat"
    for folder in ("photo_jpg", "monet_jpg"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (40, 40), (10 * (i + 1),) * 3).save(root / "photo_jpg" / f"p{i}.png")
    Image.new("RGB", (40, 40), (200, 0, 0)).save(root / "monet_jpg" / "m.png")
    return build_dataset(tiny_config, root)


def test_memory_loader_covers_every_photo_once_per_epoch_and_resumes(tmp_path, tiny_config):
    dataset = coloured_dataset(tmp_path, tiny_config)
    loader = make_train_loader(tiny_config, dataset, "memory")
    assert loader.steps_per_epoch == 3
    epoch0 = list(loader)
    photo, monet = epoch0[0]
    assert photo.shape == monet.shape == (2, 3, 32, 32) and photo.dtype == torch.float32
    levels = sorted(round(((b[:, 0, 16, 16] + 1) * 127.5 / 10).round().tolist()[i]) for b, _ in epoch0 for i in range(2))
    assert levels == [1, 2, 3, 4, 5, 6]
    assert torch.allclose(monet[:, 0], torch.full_like(monet[:, 0], 200 / 127.5 - 1), atol=0.02)
    loader.set_epoch(0, start_batch=1)
    assert len(loader) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(list(loader), epoch0[1:]))
    loader.set_epoch(1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(list(loader), epoch0))


def test_memory_loader_crop_and_flip_are_the_reference_jitter(tiny_config):
    from monet_utils.data import InMemoryLoader
    loader = InMemoryLoader.__new__(InMemoryLoader)
    loader.image_size, loader.load_size = 4, 4  # no resize: the crop is the whole image
    ramp = torch.arange(4, dtype=torch.uint8).repeat(4, 1)[None, None].repeat(8, 3, 1, 1) * 50  # columns 0..150
    loader.batch_size, loader.share = 8, slice(0, 8)
    out = loader.augment(ramp, loader.draw_jitter(torch.Generator().manual_seed(0)))
    expected = ramp.float() / 127.5 - 1
    flipped = [torch.equal(o, expected[0].flip(-1)) for o in out]
    assert all(f or torch.equal(o, expected[0]) for f, o in zip(flipped, out))
    assert 0 < sum(flipped) < 8  # both outcomes occur
    loader.load_size = 8  # now 4x4 crops of 8x8 images, whose pixels say where they are
    where = (torch.arange(8)[:, None] * 8 + torch.arange(8)).to(torch.uint8)
    images = where[None, None].repeat(8, 3, 1, 1)
    corners, flips = loader.draw_jitter(torch.Generator().manual_seed(1))
    crops = loader.augment(images, (corners, flips))
    for crop, (top, left), flip in zip(crops, corners.tolist(), flips):
        window = where[top:top + 4, left:left + 4].float() / 127.5 - 1
        assert torch.equal(crop[0], window.flip(-1) if flip else window)
    assert len({tuple(c) for c in corners.tolist()}) > 1  # the corners vary


def test_a_wrong_data_dir_variable_is_an_error_not_a_fallback(tmp_path, dataset_dir, monkeypatch, no_default_locations):
    monkeypatch.setattr(data, "LOCAL_DATA", dataset_dir)  # a valid dataset it must not fall back to
    a_file = tmp_path / "data.zip"
    a_file.write_bytes(b"zip")
    monkeypatch.setenv("DATA_DIR", str(a_file))
    with pytest.raises(DataError, match=r"\$DATA_DIR .*data.zip: is a file, not a folder"):
        find_data_dir()
    no_paintings = tmp_path / "half"
    write_images(no_paintings / "photo_jpg", 2)
    (no_paintings / "monet_jpg").mkdir()
    monkeypatch.setenv("DATA_DIR", str(no_paintings))
    with pytest.raises(DataError, match="monet_jpg/ holds no images"):
        find_data_dir()
    with pytest.raises(DataError, match="data_dir .*data.zip: is a file"):
        find_data_dir(a_file)


def test_the_main_job_does_not_swap_a_wrong_data_dir_for_demo_data(tmp_path, monkeypatch):
    from monet_utils import runner
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "typo"))
    monkeypatch.setattr(runner, "make_demo_dataset", lambda root: pytest.fail("fell back to the demo data"))
    with pytest.raises(DataError, match="typo: does not exist"):
        runner.run_main_job(output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def sixteen_bit_ramp(path):
    """A 16-bit grayscale PNG whose columns run 0..65535."""
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    return path


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    path = sixteen_bit_ramp(tmp_path / "ramp16.png")
    expected = np.linspace(0, 255, 64).round()
    row = load_rgb(path)[0, :, 0].astype(float)
    assert np.abs(row - expected).max() <= 1
    decoded = data.decode_all([path], 64)[0, 0].float().mean(0).numpy()  # 8 rows resized to 64, same columns
    assert np.abs(decoded - expected).max() <= 1


def exif_rotated_photo(path):
    """A 40 wide x 20 high image, red on its left half, stored with EXIF orientation 6: viewers
    show it turned 90 degrees clockwise, 20 wide x 40 high, red on top."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20, 0] = 255
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(pixels).save(path, exif=exif)
    return path


def test_exif_orientation_is_applied_everywhere(tmp_path):
    path = exif_rotated_photo(tmp_path / "phone.jpg")
    upright = load_rgb(path)
    assert upright.shape == (40, 20, 3)
    assert upright[:20, :, 0].mean() > 200 and upright[20:, :, 0].mean() < 50  # red on top
    assert data.oriented_size(path) == (20, 40)
    square = data.decode_all([path], 32)[0]
    assert square[0, :16].float().mean() > 200 and square[0, 16:].float().mean() < 50
