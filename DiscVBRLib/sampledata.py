"""The DiscVBR phantom in the Sample Data module (category "DiscVBR"), registered once at startup.

Both samples are simulated on the spot (:mod:`discvbr.extension.sample`), never downloaded:

* "DiscVBR phantom case": the echoes of one phantom subject (each volume carrying its echo
  time) and its true disc labels, for DiscSegmentation and DiscRelaxometry;
* "DiscVBR phantom cohort": a 4-subject phantom cohort written to a new temporary folder,
  chosen as DiscStatistics' manifest with a study folder beside it.
"""

import os

__all__ = ["CATEGORY", "SAMPLES", "register_sample_data"]

CATEGORY = "DiscVBR"
#: Sample name -> module whose icon is the thumbnail.
SAMPLES = {"DiscVBR phantom case": "DiscRelaxometry", "DiscVBR phantom cohort": "DiscStatistics"}


def register_sample_data(sample_data_logic=None, *, icons_root=None):
    """Register the two samples with SampleData (once per session; later calls do nothing).

    Parameters
    ----------
    sample_data_logic : class, optional
        ``SampleData.SampleDataLogic`` (default: imported; the tests pass a stand-in).
    icons_root : str, optional
        Folder holding the modules' folders (default: the folder above this package).
    """
    if sample_data_logic is None:
        import SampleData

        sample_data_logic = SampleData.SampleDataLogic
    registered = getattr(sample_data_logic, "sampleDataSourcesByCategory", lambda category: [])(CATEGORY)
    names = {getattr(source, "sampleName", None) for source in registered}
    root = icons_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loaders = {"DiscVBR phantom case": _load_case, "DiscVBR phantom cohort": _load_cohort}
    for name, module in SAMPLES.items():
        if name in names:
            continue
        sample_data_logic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=name,
            uris=[],
            fileNames=[],
            nodeNames=[],
            thumbnailFileName=os.path.join(root, module, "Resources", "Icons", f"{module}.png"),
            customDownloader=loaders[name],
        )


def _load_case(source=None):
    import slicer

    from discvbr.extension.sample import load_phantom_case

    case = load_phantom_case(slicer.mrmlScene)
    slicer.util.setSliceViewerLayers(background=case.t1rho[0], label=case.truth, fit=True)
    return [*case.t1rho, *case.t2, case.truth]


def _load_cohort(source=None):
    import tempfile

    import slicer

    from discvbr.extension import statistics as T
    from discvbr.extension.sample import write_phantom_cohort
    from discvbr.extension.statistics import DiscStatisticsLogic

    folder = tempfile.mkdtemp(prefix="discvbr-phantom-cohort-")
    manifest = write_phantom_cohort(os.path.join(folder, "cohort"))
    node = DiscStatisticsLogic().parameter_node()
    node.SetParameter(T.MANIFEST, str(manifest))
    node.SetParameter(T.STUDY, os.path.join(folder, "study"))
    slicer.util.infoDisplay(
        f"A 4-subject phantom cohort was written to {folder}. In Disc Statistics, click "
        "'Run the pipeline on the manifest' to build the study, then run an analysis.",
        windowTitle="DiscVBR phantom cohort",
    )
    return []
