import numpy as np

from monet_utils.data import find_data_dir, is_demo_data, list_images, load_rgb
from monet_utils.demo_data import make_demo_dataset


def test_demo_dataset_has_kaggle_layout_and_a_marker(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", n_photos=6, n_paintings=4, progress=False)
    photos, paintings = list_images(root / "photo_jpg"), list_images(root / "monet_jpg")
    assert len(photos) == 6 and len(paintings) == 4
    assert all(p.suffix == ".jpg" for p in photos + paintings)
    assert load_rgb(photos[0]).shape == (256, 256, 3)
    assert find_data_dir(root) == root and is_demo_data(root)


def test_paintings_look_different_from_photos(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", n_photos=6, n_paintings=6, progress=False)

    def stats(folder):
        images = np.stack([load_rgb(p).astype(float) for p in list_images(root / folder)])
        brightness = images.mean()
        # Short strokes of broken colour: neighbouring pixels differ in hue, not just in shade.
        chroma = images - images.mean(axis=-1, keepdims=True)
        chroma_texture = np.abs(np.diff(chroma, axis=2)).mean()
        return brightness, chroma_texture

    photo_brightness, photo_texture = stats("photo_jpg")
    painting_brightness, painting_texture = stats("monet_jpg")
    assert painting_brightness > photo_brightness + 8  # Monet's light palette
    assert painting_texture > 2 * photo_texture


def test_demo_data_is_reproducible_and_keeps_existing_files(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_photos=2, n_paintings=1, progress=False)
    b = make_demo_dataset(tmp_path / "b", n_photos=2, n_paintings=1, progress=False)
    assert (a / "monet_jpg/demo_monet_0000.jpg").read_bytes() == (b / "monet_jpg/demo_monet_0000.jpg").read_bytes()
    assert (a / "photo_jpg/demo_photo_0001.jpg").read_bytes() != (a / "photo_jpg/demo_photo_0000.jpg").read_bytes()
    kept = a / "photo_jpg/demo_photo_0000.jpg"
    kept.write_bytes(b"user file")
    make_demo_dataset(a, n_photos=2, n_paintings=1, progress=False)
    assert kept.read_bytes() == b"user file"


def test_two_processes_making_the_same_demo_data_at_once(tmp_path, monkeypatch):
    """Two commands started together (the test suite's two environments, two papermill runs) both
    fill data/demo: one's rename must not find its temporary file taken by the other's."""
    import os

    from monet_utils import files

    rename = os.replace
    other_writer_ran = []

    def the_other_process_renames_first(src, dst):
        if not other_writer_ran:
            other_writer_ran.append(True)
            make_demo_dataset(tmp_path / "demo", n_photos=1, n_paintings=0, progress=False)
        rename(src, dst)

    monkeypatch.setattr(files.os, "replace", the_other_process_renames_first)
    root = make_demo_dataset(tmp_path / "demo", n_photos=1, n_paintings=0, progress=False)
    assert other_writer_ran
    assert load_rgb(root / "photo_jpg/demo_photo_0000.jpg").shape == (256, 256, 3)
    assert not list(root.rglob("*.tmp"))
