import io
import zipfile

import pytest
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
