"""The phantom samples: simulated offline, loaded into a real MRML scene, registered with Sample Data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from discvbr.extension import relaxometry as R
from discvbr.extension.relaxometry import DiscRelaxometryLogic
from discvbr.extension.sample import load_phantom_case, write_phantom_cohort
from discvbr.manifest import read_manifest
from discvbr.mrml.scene import new_scene
from discvbr.mrml.segmentations import segmentation_from_labels
from discvbr.mrml.volumes import image_from_volume

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscVBRLib import sampledata  # noqa: E402


def test_phantom_case_is_ready_for_relaxometry_without_typing_times():
    scene = new_scene()
    case = load_phantom_case(scene)
    assert len(case.t1rho) == len(case.session.t1rho.times) and len(case.t2) == len(case.session.t2.times)
    for volume, echo in zip(case.t1rho, range(len(case.t1rho))):
        np.testing.assert_array_equal(image_from_volume(volume).array, case.session.t1rho.echo(echo).array)
    np.testing.assert_array_equal(image_from_volume(case.truth).array, case.session.labels.array)
    logic = DiscRelaxometryLogic(scene)
    node = logic.parameter_node()
    logic.set_echo_volumes(node, "t1rho", case.t1rho, "")
    logic.set_echo_volumes(node, "t2", case.t2, "")
    node.SetNodeReferenceID(R.SEGMENTATION, segmentation_from_labels(scene, case.session.labels, name="discs").GetID())
    assert logic.disabled_reason(node) is None
    series = logic.series_inputs(node)
    np.testing.assert_array_equal(series["t1rho"].times, case.session.t1rho.times)
    np.testing.assert_array_equal(series["t2"].times, case.session.t2.times)
    # the same seed gives the same case
    again = load_phantom_case(new_scene())
    np.testing.assert_array_equal(image_from_volume(again.t1rho[1]).array, image_from_volume(case.t1rho[1]).array)


def test_phantom_cohort_has_a_manifest_with_masks(tmp_path):
    manifest = write_phantom_cohort(tmp_path / "cohort", subjects=3)
    cohort = read_manifest(manifest)
    assert len(list(cohort)) == 3 and all(e.mask is not None for e in cohort)


class FakeSampleData:
    """Sample Data's registry: sources are objects with the registration's fields as attributes."""

    sources: list = []

    @classmethod
    def sampleDataSourcesByCategory(cls, category):
        return [s for s in cls.sources if s.category == category]

    @classmethod
    def registerCustomSampleDataSource(cls, **source):
        from types import SimpleNamespace

        cls.sources.append(SimpleNamespace(**source))


def test_samples_are_registered_once_with_offline_loaders():
    FakeSampleData.sources = []
    sampledata.register_sample_data(FakeSampleData)
    sampledata.register_sample_data(FakeSampleData)
    names = [s.sampleName for s in FakeSampleData.sources]
    assert names == list(sampledata.SAMPLES)
    for source in FakeSampleData.sources:
        assert source.uris == [] and callable(source.customDownloader)  # nothing to download
        assert Path(source.thumbnailFileName).is_file()
