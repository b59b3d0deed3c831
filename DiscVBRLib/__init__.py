"""The Slicer side of the DiscVBR modules: what needs Qt, ``slicer`` or the running application.

The three scripted modules (DiscSegmentation, DiscRelaxometry, DiscStatistics) share it the
way SlicerElastix's modules share ``ElastixLib``: it is installed beside them, while the
Qt-free logic stays in the ``discvbr`` package.

``compat``      the Python (and so the 3D Slicer release) the modules need, checked on load
``widget``      the parameter-node lifecycle and the background-job timer of the module widgets
``sampledata``  the phantom case registered with the Sample Data module

This file must parse and run on the oldest Python a Slicer may bring (3.9), so that an old
Slicer shows :func:`DiscVBRLib.compat.require_supported_python`'s message instead of a
syntax error.
"""
