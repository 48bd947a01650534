import io
import zipfile

import pytest
import torch
from PIL import Image

from monet_utils.__main__ import main
from monet_utils.data import DataError
from monet_utils.stylize import plan_batches, stylize
from monet_utils.checkpoints import CheckpointError
from monet_utils.training import CycleGANTrainer

from .conftest import write_images


@pytest.fixture
def checkpoint(tiny_config):
    return CycleGANTrainer(tiny_config).save()


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "photos"
    write_images(folder, 3, size=(50, 38), prefix="a")
    write_images(folder, 2, size=(64, 64), suffix=".png", mode="RGBA", prefix="b")
    write_images(folder, 1, size=(30, 41), mode="L", prefix="c")
    return folder


def test_stylize_keeps_sizes_rounded_to_a_multiple_of_4(checkpoint, mixed_folder, tmp_path):
    out = stylize(checkpoint, mixed_folder, tmp_path / "styled", batch_size=2, progress=False)
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"a_000.jpg": (48, 36), "a_001.jpg": (48, 36), "a_002.jpg": (48, 36),
                     "b_000.jpg": (64, 64), "b_001.jpg": (64, 64), "c_000.jpg": (28, 40)}
    assert all(Image.open(p).mode == "RGB" for p in out.iterdir())
    assert not list(out.glob("*.tmp"))


def test_stylize_to_a_zip_at_a_fixed_size(checkpoint, mixed_folder, tmp_path):
    out = stylize(checkpoint, mixed_folder, tmp_path / "styled.zip", size=32, progress=False)
    with zipfile.ZipFile(out) as archive:
        assert len(archive.namelist()) == 6
        assert {Image.open(io.BytesIO(archive.read(n))).size for n in archive.namelist()} == {(32, 32)}


def test_batches_group_equal_sizes_only(mixed_folder):
    paths = sorted(mixed_folder.iterdir())
    batches = plan_batches(paths, None, batch_size=2)
    assert [(len(b), size) for b, size in batches] == [(2, (36, 48)), (1, (36, 48)), (2, (64, 64)), (1, (40, 28))]
    assert [len(b) for b, _ in plan_batches(paths, 32, batch_size=4)] == [4, 2]


def test_clear_errors_for_bad_inputs(checkpoint, tmp_path, tiny_config, capsys):
    with pytest.raises(DataError, match="does not exist"):
        stylize(checkpoint, tmp_path / "absent", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable images"):
        stylize(checkpoint, tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        stylize(tmp_path / "nope.pt", tmp_path / "empty", tmp_path / "out", progress=False)
    assert main(["stylize", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "empty"),
                 "--output", str(tmp_path / "o")]) == 2
    assert "no readable images" in capsys.readouterr().err


@pytest.mark.parametrize("inside", ["photos", "photos/monet", "photos/monet.zip"])
def test_output_in_the_input_folder_is_refused_and_nothing_is_touched(checkpoint, tmp_path, inside):
    photos = write_images(tmp_path / "photos", 2, size=(32, 32), suffix=".jpg")
    before = {p: p.read_bytes() for p in photos}
    with pytest.raises(DataError, match="inside the input folder"):
        stylize(checkpoint, tmp_path / "photos", tmp_path / inside, progress=False)
    assert {p: p.read_bytes() for p in photos} == before
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == sorted(p.name for p in photos)


def test_inputs_sharing_a_stem_are_all_kept(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    write_images(folder, 1, size=(32, 32), suffix=".png", prefix="a")  # a_000.png
    write_images(folder, 1, size=(32, 32), suffix=".jpg", prefix="a")  # a_000.jpg
    write_images(folder, 1, size=(32, 32), suffix=".jpg", prefix="b")
    out = stylize(checkpoint, folder, tmp_path / "monet", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a_000_jpg.jpg", "a_000_png.jpg", "b_000.jpg"]
    with zipfile.ZipFile(stylize(checkpoint, folder, tmp_path / "monet.zip", size=32, progress=False)) as archive:
        assert sorted(archive.namelist()) == ["a_000_jpg.jpg", "a_000_png.jpg", "b_000.jpg"]


def test_a_phone_photo_is_stylized_upright(checkpoint, tmp_path):
    from .test_data import exif_rotated_photo
    (tmp_path / "photos").mkdir()
    exif_rotated_photo(tmp_path / "photos" / "phone.jpg")
    out = stylize(checkpoint, tmp_path / "photos", tmp_path / "monet", progress=False)
    assert Image.open(out / "phone.jpg").size == (20, 40)  # stored 40x20, shown (and stylized) 20x40


def test_batches_hold_at_most_a_pixel_budget(tmp_path):
    big = write_images(tmp_path / "big", 3, size=(1024, 768), prefix="big")
    small = write_images(tmp_path / "small", 5, size=(64, 64), prefix="small")
    batches = plan_batches(big + small, None, batch_size=8)  # budget: 8 x 256 x 256 pixels
    assert [len(b) for b, _ in batches] == [1, 1, 1, 5]  # 768x1024 is 12 of 256x256: alone
    assert [len(b) for b, _ in plan_batches(small, None, batch_size=8, max_pixels=3 * 64 * 64)] == [3, 2]


class RunsOutOfMemoryAbove:
    """A generator that raises CUDA's out-of-memory error for batches above `limit`, as a GPU does."""

    def __init__(self, generator, limit):
        self.generator, self.limit, self.batch_sizes = generator, limit, []

    def __call__(self, images):
        self.batch_sizes.append(len(images))
        if len(images) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return self.generator(images)

    def parameters(self):
        return self.generator.parameters()

    def eval(self):
        return self


def test_a_batch_out_of_gpu_memory_is_split_and_every_image_keeps_its_own_name(checkpoint, tmp_path):
    """Each photo a constant colour: a swapped or lost image would show in the names' colours."""
    import numpy as np
    from monet_utils.checkpoints import load_generator
    from monet_utils.data import load_images
    from monet_utils.stylize import encode_jpeg, translate_to_jpegs
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(7):
        Image.new("RGB", (32, 32), (i * 36, 255 - i * 36, 128)).save(folder / f"p{i}.png")
    paths = sorted(folder.iterdir())
    generator, _ = load_generator(checkpoint, device="cpu")
    whole = dict(translate_to_jpegs(generator, paths, batch_size=8, progress=False))
    tight = RunsOutOfMemoryAbove(generator, limit=2)
    split = dict(translate_to_jpegs(tight, paths, batch_size=8, progress=False))
    assert tight.batch_sizes[0] == 7  # tried whole first, then halved until it fits
    assert sum(size for size in tight.batch_sizes if size <= 2) == 7
    assert list(split) == list(whole) == [f"p{i}.jpg" for i in range(7)]
    decoded = lambda data: np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)  # noqa: E731
    for path in paths:  # each name holds its own photo's translation, encoded the same way
        with torch.inference_mode():
            alone = decoded(encode_jpeg(generator(load_images([path], 32))[0]))
        for outputs in (whole, split):
            assert np.abs(decoded(outputs[f"{path.stem}.jpg"]) - alone).mean() < 1, path.name  # float order only


def test_one_image_out_of_gpu_memory_is_a_clear_error(checkpoint, tmp_path):
    from monet_utils.checkpoints import load_generator
    from monet_utils.stylize import translate_to_jpegs
    paths = write_images(tmp_path / "photos", 1, size=(48, 40))
    generator, _ = load_generator(checkpoint, device="cpu")
    with pytest.raises(DataError, match=r"img_000.jpg: 48x40 does not fit in GPU memory even alone; pass --size"):
        list(translate_to_jpegs(RunsOutOfMemoryAbove(generator, limit=0), paths, progress=False))
