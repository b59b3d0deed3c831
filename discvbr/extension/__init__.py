"""The logic of the 3D Slicer modules, without Qt: what each module's GUI calls.

Every class here works on an MRML scene given to it (``slicer.mrmlScene`` by default
inside 3D Slicer, a headless scene from :func:`discvbr.mrml.scene.new_scene` in scripts and
tests) and keeps the module's settings in a parameter node, so the same logic runs in
the Slicer GUI, in the module self-tests, in ``scripts/slicer_scene_demo.py`` and in CI
against the ``slicer-core`` wheels.

``segmentation``   DiscSegmentationLogic: disc segmentation in a separate process, review list, masks
``relaxometry``    DiscRelaxometryLogic: echo series, per-disc registration, fitting, QC, decay curves
``statistics``     DiscStatisticsLogic: voxel-wise statistics of a study folder, maps on the spine mesh
``elastix``        SlicerElastixRunner: the per-disc registration through the SlicerElastix extension
``process``        running ``discvbr`` commands and module jobs as child processes with progress and cancel
``jobs``           the child-process side of the relaxometry and statistics jobs (line protocol, heartbeat)
``sample``         the phantom case and cohort the Sample Data module offers (simulated, offline)
``parameters``     parameter nodes: one per module, typed reads with clear errors
``dependencies``   the Python packages each module needs inside Slicer, checked and installed on first use

The widget-side helpers (version check, job timer, Sample Data registration) live beside the
modules in ``DiscVBRLib/``, outside this Qt-free package.

Nothing here imports Qt, ``slicer``, torch, itk, scipy or pandas at import time, so a
module loads in Slicer before its dependencies are installed.
"""
