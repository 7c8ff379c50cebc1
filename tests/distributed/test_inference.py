"""Sliding-window inference (lucid.inference) against NumPy references written out here, an exported
UNet against itself and eager mode, and examples/distributed_inference.py on 2 ranks against 1 process."""
import json
import subprocess
import sys

import numpy as np
import pytest

import lucid
from lucid.inference import sliding_window, window_starts


def affine(window):
    """A pointwise model with two output channels: any blend of its windows is its whole-volume output."""
    return np.concatenate([2 * window + 1, -window], axis=1)


def window_mean(window):
    """A model whose output depends on the whole window: each voxel gets the window's mean (+ the voxel)."""
    return window + window.mean(axis=tuple(range(2, window.ndim)), keepdims=True)


def gaussian(size, sigma):
    return np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("shape, window, overlap", [((9, 7, 11), (4, 4, 4), 0.5), ((5, 6), (3, 6), 0.25),
                                                      ((3, 10), (5, 4), 0.0), ((17,), (4,), 0.9)])
def test_a_pointwise_model_gives_its_whole_volume_output(shape, window, overlap, blend):
    volume = np.random.default_rng(0).standard_normal((2, 1) + shape).astype(np.float32)
    result = sliding_window(affine, volume, window, overlap=overlap, blend=blend)
    assert result.shape == (2, 2) + shape and result.dtype == np.float32
    np.testing.assert_allclose(result, affine(volume), rtol=1e-6, atol=1e-6)


def test_numpy_integers_are_window_sizes():
    volume = np.arange(6, dtype=np.float32).reshape(1, 1, 6)
    np.testing.assert_allclose(sliding_window(affine, volume, np.int64(4)), affine(volume), rtol=1e-6)
    np.testing.assert_array_equal(sliding_window(affine, volume, np.array([3]), blend="constant"), affine(volume))


def test_window_starts_cover_the_axis_and_end_at_its_end():
    assert window_starts(7, 4, 0.5) == [0, 2, 3]
    assert window_starts(8, 4, 0.5) == [0, 2, 4]
    assert window_starts(8, 4, 0.0) == [0, 4]
    assert window_starts(4, 4, 0.25) == [0]
    assert window_starts(10, 3, 0.99) == list(range(8))                  # the step is at least 1


def test_a_one_dimensional_blend_equals_the_reference_written_by_hand():
    volume = np.arange(7, dtype=np.float32).reshape(1, 1, 7) ** 2
    starts, size = [0, 2, 3], 4                                          # step round(4 * 0.5) = 2, last ends at 7
    for blend, weight in (("constant", np.ones(size)), ("gaussian", gaussian(size, 0.125 * size))):
        total, norm = np.zeros(7), np.zeros(7)
        for start in starts:
            piece = volume[0, 0, start:start + size].astype(np.float64)
            total[start:start + size] += (piece + piece.mean()) * weight
            norm[start:start + size] += weight
        result = sliding_window(window_mean, volume, 4, overlap=0.5, blend=blend)
        np.testing.assert_allclose(result[0, 0], total / norm, rtol=1e-5)


def test_a_two_dimensional_blend_with_an_axis_shorter_than_the_window():
    volume = np.random.default_rng(1).standard_normal((1, 2, 5, 2)).astype(np.float32)
    padded = np.zeros((1, 2, 5, 3), np.float32)                           # axis 1 padded with zeros to 3
    padded[..., :2] = volume
    weight = np.multiply.outer(gaussian(3, 0.375), gaussian(3, 0.375))
    total, norm = np.zeros((1, 2, 5, 3)), np.zeros((5, 3))
    for start in (0, 2):                                                 # step round(3 * 0.6) = 2
        piece = padded[:, :, start:start + 3].astype(np.float64)
        total[:, :, start:start + 3] += window_mean(piece) * weight
        norm[start:start + 3] += weight
    result = sliding_window(window_mean, volume, (3, 3), overlap=0.4)
    assert result.shape == volume.shape
    np.testing.assert_allclose(result, (total / norm)[..., :2], rtol=1e-5)


@pytest.mark.parametrize("arguments, words", [
    (dict(volume=np.zeros((4, 4)), window=2), "expected a volume (N, C, *spatial)"),
    (dict(volume=np.zeros((1, 1, 4, 4)), window=(2,)), "window must be 2 positive int(s)"),
    (dict(volume=np.zeros((1, 1, 4, 4)), window=(2, 0)), "window must be 2 positive int(s)"),
    (dict(volume=np.zeros((1, 1, 4, 4)), window=(2, 2.0)), "window must be 2 positive int(s)"),
    (dict(volume=np.zeros((1, 1, 4)), window=2, overlap=1.0), "overlap must be in [0, 1)"),
    (dict(volume=np.zeros((1, 1, 4)), window=2, blend="linear"), "blend must be one of"),
])
def test_bad_arguments_are_refused(arguments, words):
    with pytest.raises(ValueError, match="sliding_window") as info:
        sliding_window(affine, **arguments)
    assert words in str(info.value)


def test_a_prediction_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"predict must return \(N=1, channels, \*\(2, 2\)\)"):
        sliding_window(lambda w: w[:, :, :1], np.zeros((1, 1, 4, 4)), 2)


@pytest.fixture(scope="module")
def exported_unet(tmp_path_factory):
    """A UNet3D exported for one 8^3 window, its library loaded, and the eager model in eval mode."""
    from models import UNet3D

    lucid.manual_seed(3)
    model = UNet3D(base=2, depth=1)
    path = tmp_path_factory.mktemp("unet") / "unet.so"
    lucid.export(model, lucid.spec(1, 1, 8, 8, 8), path=path)
    library = lucid.runtime.load(path)
    library.set_num_threads(1)
    return library, model.eval()


def test_one_window_over_the_whole_volume_is_the_exported_model_itself(exported_unet):
    library, model = exported_unet
    volume = np.random.default_rng(2).standard_normal((1, 1, 8, 8, 8)).astype(np.float32)
    whole = library(volume)
    np.testing.assert_array_equal(sliding_window(library, volume, 8, blend="constant"), whole)
    np.testing.assert_allclose(sliding_window(library, volume, 8), whole, rtol=1e-6, atol=1e-7)
    with lucid.no_grad():
        np.testing.assert_allclose(whole, model(lucid.tensor(volume)).numpy(), rtol=1e-4, atol=1e-5)


def test_the_exported_model_over_a_larger_volume_blends_its_windows(exported_unet):
    library, model = exported_unet
    volume = np.random.default_rng(4).standard_normal((1, 1, 12, 8, 6)).astype(np.float32)
    padded = np.pad(volume, [(0, 0)] * 4 + [(0, 2)])
    total, norm = np.zeros((1, 2, 12, 8, 8)), np.zeros((12, 8, 8))
    for start in (0, 4):                                                 # 12 = windows at 0 and 4 (step 6 -> 0, 4)
        total[:, :, start:start + 8] += library(padded[:, :, start:start + 8])
        norm[start:start + 8] += 1
    result = sliding_window(library, volume, 8, overlap=0.25, blend="constant")
    np.testing.assert_allclose(result, (total / norm)[..., :6], rtol=1e-6, atol=1e-7)


def run_example(output, ranks=None):
    """examples/distributed_inference.py on synthetic volumes, on `ranks` MPI ranks or as one plain process."""
    from mpi_jobs import ROOT, job_environment, require_mpi

    from lucid.distributed.launch import mpiexec_command

    require_mpi()
    argv = [str(ROOT / "examples" / "distributed_inference.py"), "--output", str(output), "--threads", "1"]
    command = mpiexec_command(ranks, argv) if ranks else [sys.executable, *argv]
    done = subprocess.run(command, env=job_environment(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.mark.long_running
def test_two_ranks_write_exactly_what_one_process_writes(tmp_path):
    alone, shared = run_example(tmp_path / "one"), run_example(tmp_path / "two", ranks=2)
    assert "5 volumes on 1 rank(s)" in alone and "5 volumes on 2 rank(s)" in shared
    maps = sorted(p.name for p in (tmp_path / "one").glob("volume*.npy"))
    assert len(maps) == 5 and maps == sorted(p.name for p in (tmp_path / "two").glob("volume*.npy"))
    for name in maps:
        one, two = np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        volume = np.load(tmp_path / "one" / "synthetic-volumes" / name)
        assert one.shape == volume.shape and np.all((one >= 0) & (one <= 1))
        np.testing.assert_array_equal(one, two)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "one" / "summary.json").read_text())
    assert [s["name"] for s in summary] == maps and summary[2]["depth"] == 30
