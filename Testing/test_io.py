"""Image I/O keeps geometry; series and times are validated; writes are atomic."""

from __future__ import annotations

import numpy as np
import pytest

from discvbr import DiscVBRError
from discvbr.io import (
    EchoSeries,
    Image,
    atomic_write,
    parse_times,
    read_geometry,
    read_image,
    read_series,
    require_sagittal,
    write_image,
    write_series,
)


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([4.0, 0.7, 0.8])
    affine[:3, 3] = [-10.5, 33.0, -120.25]
    return affine


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_image_round_trip_keeps_values_and_geometry(tmp_path, suffix):
    rng = np.random.default_rng(0)
    image = Image(rng.random((3, 17, 11)).astype(np.float32), _oblique_affine())
    path = write_image(tmp_path / f"img{suffix}", image)
    back = read_image(path)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, [4.0, 0.7, 0.8], atol=1e-5)
    np.testing.assert_allclose(back.origin, [-10.5, 33.0, -120.25], atol=1e-5)
    shape, affine = read_geometry(path)
    assert shape == (3, 17, 11)
    np.testing.assert_allclose(affine, image.affine, atol=1e-5)


def test_nrrd_list_axis_first_is_moved_last(tmp_path):
    """3D Slicer writes multi-volumes with the list axis first."""
    import nrrd

    data = np.arange(4 * 2 * 3 * 5, dtype=np.float32).reshape(4, 2, 3, 5)  # (E, X, Y, Z)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array([[np.nan] * 3, [-2.0, 0, 0], [0, -1.0, 0], [0, 0, 1.5]]),
        "space origin": np.array([10.0, 20.0, 30.0]),
        "kinds": ["list", "domain", "domain", "domain"],
    }
    path = tmp_path / "multi.nrrd"
    nrrd.write(str(path), data, header, index_order="F")
    image = read_image(path)
    assert image.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(image.array[..., 2], data[2])
    # LPS (10, 20, 30) is RAS (-10, -20, 30); LPS direction -x is RAS +x
    np.testing.assert_allclose(image.origin, [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(np.diag(image.affine)[:3], [2.0, 1.0, 1.5])
    assert read_geometry(path)[0] == (2, 3, 5, 4)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("0;10;x;80", "not a number"),
        ("0;10;10;80", "strictly increasing"),
        ("0;40;10", "strictly increasing"),
        ("-5;10;40", "negative"),
        ("10", "at least 2"),
    ],
)
def test_parse_times_rejects_bad_times(text, fragment):
    with pytest.raises(DiscVBRError, match=fragment):
        parse_times(text, what="t1rho_times")


def test_parse_times_accepts_separators():
    np.testing.assert_array_equal(parse_times("0, 10;40 80"), [0, 10, 40, 80])


def test_series_from_echo_files_and_4d(tmp_path):
    rng = np.random.default_rng(1)
    affine = np.diag([8.0, 0.9, 0.9, 1.0])
    data = rng.random((1, 6, 7, 3)).astype(np.float32)
    paths = [write_image(tmp_path / f"e{i}.nii.gz", Image(data[..., i], affine)) for i in range(3)]
    from_files = read_series(paths, "0,10,40", kind="t1rho")
    np.testing.assert_array_equal(from_files.data, data)
    write_series(tmp_path / "s.nii.gz", from_files)
    from_4d = read_series(tmp_path / "s.nii.gz", [0, 10, 40])
    np.testing.assert_array_equal(from_4d.data, data)
    assert (tmp_path / "s.json").is_file()


def test_series_on_different_grids_names_the_echo(tmp_path):
    a = write_image(tmp_path / "e1.nii.gz", Image(np.zeros((1, 5, 5)), np.diag([8.0, 1, 1, 1])))
    b = write_image(tmp_path / "e2.nii.gz", Image(np.zeros((1, 5, 5)), np.diag([8.0, 1.2, 1, 1])))
    with pytest.raises(DiscVBRError, match=r"e2\.nii\.gz.*echo 2 is not on the grid"):
        read_series([a, b], "0,10")


def test_series_echo_count_must_match_times(tmp_path):
    write_series(tmp_path / "s.nii.gz", EchoSeries(np.zeros((1, 4, 4, 3), np.float32), [0, 10, 40], np.eye(4)))
    with pytest.raises(DiscVBRError, match="3 echo"):
        read_series(tmp_path / "s.nii.gz", "0,10,40,80")


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(DiscVBRError, match="nope.nii.gz"):
        read_image(tmp_path / "nope.nii.gz")


def test_require_sagittal_reorders_and_refuses_other_planes():
    # a sagittal stack stored as (AP, SI, LR): 4 mm slices along LR
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 0], affine[2, 1], affine[3, 3] = 4.0, 0.9, 0.9, 1.0
    data = np.arange(10 * 12 * 3, dtype=float).reshape(10, 12, 3)
    canonical = require_sagittal(Image(data, affine))
    assert canonical.shape == (3, 10, 12)
    np.testing.assert_allclose(canonical.spacing, [4.0, 0.9, 0.9])
    np.testing.assert_array_equal(canonical.array[1], data[:, :, 1])
    # same voxel positions in physical space
    ijk = np.array([2, 5, 1, 1.0])
    np.testing.assert_allclose(canonical.affine @ np.array([1, 2, 5, 1.0]), affine @ ijk)

    axial = Image(np.zeros((256, 256, 20)), np.diag([0.9, 0.9, 5.0, 1.0]))
    with pytest.raises(DiscVBRError, match="axial"):
        require_sagittal(axial)
    coronal = Image(np.zeros((256, 20, 256)), np.diag([0.9, 5.0, 0.9, 1.0]))
    with pytest.raises(DiscVBRError, match="coronal"):
        require_sagittal(coronal)
