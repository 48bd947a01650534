import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from monet_utils.data import build_dataset  # noqa: E402
from monet_utils.models import ResnetGenerator, init_weights  # noqa: E402
from monet_utils.plots import plot_losses, plot_samples, show_augmentations, show_images, smooth  # noqa: E402
from monet_utils.cyclegan import LOSS_NAMES  # noqa: E402


def test_smooth_is_a_running_mean_that_starts_at_the_first_step():
    assert smooth([1, 2, 3, 4], 2) == pytest.approx([1, 1.5, 2.5, 3.5])
    assert smooth([5, 5, 5], 10) == pytest.approx([5, 5, 5])


@pytest.mark.parametrize("names, generator_terms, discriminator_terms", [
    (LOSS_NAMES, LOSS_NAMES[:6], ("D_monet", "D_photo")),
    (("G_GAN", "NCE", "NCE_Y", "D_real", "D_fake", "D"), ("G_GAN", "NCE", "NCE_Y"), ("D_real", "D_fake", "D")),
], ids=["cyclegan", "cut"])
def test_loss_plot_has_a_generator_and_a_discriminator_panel(tmp_path, names, generator_terms, discriminator_terms):
    history = [{"step": s, "epoch": 0, **{name: 1.0 / s for name in names}} for s in range(1, 21)]
    fig = plot_losses(history, path=tmp_path / "losses.png")
    ax_g, ax_d = fig.axes
    assert [line.get_label() for line in ax_g.lines] == list(generator_terms)
    assert [line.get_label() for line in ax_d.lines] == list(discriminator_terms)
    assert Image.open(tmp_path / "losses.png").size[0] > 500


def test_empty_history_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        plot_losses([])


def test_sample_grid_shows_six_rows_of_translations(tmp_path):
    g = init_weights(ResnetGenerator(ngf=4, n_res_blocks=1))
    photos, monets = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    fig = plot_samples(g, g, photos, monets, path=tmp_path / "samples.png")
    assert len(fig.axes) == 18
    assert fig.axes[0].get_title(loc="left") == "photo" and fig.axes[3].get_title(loc="left") == "photo -> Monet"
    shown = fig.axes[0].get_images()[0].get_array()
    assert np.array_equal(shown, ((photos[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    assert (tmp_path / "samples.png").exists()


def test_without_a_generator_back_the_grid_shows_translations_of_photos_and_paintings(tmp_path):
    g = init_weights(ResnetGenerator(ngf=4, n_res_blocks=1))
    photos, monets = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fig = plot_samples(g, None, photos, monets)
    titles = [ax.get_title(loc="left") for ax in fig.axes[::2]]
    assert titles == ["photo", "photo -> Monet", "Monet", "Monet -> Monet"]
    with torch.no_grad():
        expected = ((g(monets)[1].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    assert np.array_equal(fig.axes[7].get_images()[0].get_array(), expected)


def test_image_and_augmentation_figures(tmp_path, dataset_dir, tiny_config):
    dataset = build_dataset(tiny_config, dataset_dir)
    fig = show_images(dataset.photo_paths[:3], "Photos", columns=2, path=tmp_path / "photos.png")
    assert len([ax for ax in fig.axes if ax.get_images()]) == 3
    fig = show_augmentations(dataset, count=3, path=tmp_path / "aug.png")
    photos = [ax.get_images()[0].get_array() for ax in fig.axes[:3]]  # first row: one photo, three epochs
    assert photos[0].shape == (32, 32, 3)
    assert not all(np.array_equal(photos[0], other) for other in photos[1:])
    assert dataset.epoch == 0


def test_a_figure_that_fails_to_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """A full disk or a kill in the middle of savefig used to leave half a PNG in place of the last one."""
    import errno
    from matplotlib.figure import Figure
    from monet_utils.files import WriteError
    from monet_utils.plots import save_figure

    path = tmp_path / "losses.png"
    save_figure(plot_losses([{"step": 1, **{k: 1.0 for k in LOSS_NAMES}}]), path)
    before = path.read_bytes()

    def half_then_full(self, target, **kwargs):
        with open(target, "wb") as file:
            file.write(before[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_full)
    with pytest.raises(WriteError, match=f"could not write figure {path}"):
        save_figure(plot_losses([{"step": 1, **{k: 2.0 for k in LOSS_NAMES}}]), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["losses.png"]
