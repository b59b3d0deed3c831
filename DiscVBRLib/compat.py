"""The 3D Slicer releases DiscVBR supports, checked before the ``discvbr`` package is imported.

3D Slicer 5.8 and older bring Python 3.9; Slicer 5.10 brings Python 3.12. The ``discvbr``
package needs Python 3.11 or newer (``pyproject.toml``), so the modules need Slicer 5.10 or
later. Each module file calls :func:`require_supported_python` before its first ``discvbr``
import: on an older Slicer the module then fails to load with one message naming the
release to install, not with a syntax error deep in the package. This file keeps to Python
3.9 syntax for that reason (checked by ``Testing/test_discvbrlib_compat.py``).
"""

import sys

__all__ = ["MINIMUM_PYTHON", "MINIMUM_SLICER", "TESTED_SLICER", "require_supported_python"]

#: Oldest Python the ``discvbr`` package runs on (``requires-python`` in pyproject.toml).
MINIMUM_PYTHON = (3, 11)
#: Oldest 3D Slicer release whose Python is at least :data:`MINIMUM_PYTHON`.
MINIMUM_SLICER = "5.10"
#: The Slicer release the README's walkthroughs were written for, with its Python.
TESTED_SLICER = ("5.10", "3.12")


def require_supported_python(version_info=None):
    """Refuse to load on a Python older than :data:`MINIMUM_PYTHON`, naming the Slicer to install.

    Parameters
    ----------
    version_info : tuple of int, optional
        ``(major, minor, micro, ...)`` of the running Python (default ``sys.version_info``).

    Raises
    ------
    ImportError
        One line: the minimum 3D Slicer release and the Python this Slicer brings.
    """
    version = tuple(version_info if version_info is not None else sys.version_info)
    if version[:2] < MINIMUM_PYTHON:
        running = ".".join(str(part) for part in version[:3])
        raise ImportError(
            "DiscVBR needs 3D Slicer {} or later (Python {}.{} or newer); this Slicer runs Python {}. "
            "Install a newer 3D Slicer from https://download.slicer.org".format(MINIMUM_SLICER, MINIMUM_PYTHON[0], MINIMUM_PYTHON[1], running)
        )
