"""The Python packages DiscVBR needs inside 3D Slicer, checked and installed on first use.

``discvbr/data/slicer-requirements.txt`` lists them (the package's own dependencies less
what Slicer ships: numpy and vtk are never replaced, and torch comes from the PyTorch
extension, whose ``PyTorchUtils`` chooses the build matching the machine's CUDA). A module
calls :func:`ensure_slicer_dependencies` when the user first asks it to compute: what is
installed is checked with :mod:`importlib.metadata`, and what is missing is installed after
the user agrees (``slicer.pydeps.pip_ensure`` on Slicer >= 5.11, else
``slicer.util.pip_install``). Every install runs under a pip constraints file that pins
the packages Slicer ships (numpy, vtk, SimpleITK) and torch to their installed versions,
so a dependency that asks for a newer one fails to resolve instead of replacing them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from discvbr.errors import DiscVBRError
from discvbr.resources import SLICER_REQUIREMENTS

__all__ = [
    "REQUIREMENTS_FILE",
    "TORCH_REQUIREMENT",
    "read_requirements",
    "unmet_requirements",
    "PROTECTED_PACKAGES",
    "protected_constraints",
    "ensure_slicer_dependencies",
]

#: The requirements installed into Slicer's Python.
REQUIREMENTS_FILE = SLICER_REQUIREMENTS
#: Version of torch asked of the PyTorch extension.
TORCH_REQUIREMENT = ">=2.1"
#: Distributions that Slicer ships (or the PyTorch extension installs): never replaced.
PROTECTED_PACKAGES = ("numpy", "vtk", "SimpleITK", "torch")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def read_requirements(path: str | os.PathLike = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"requirements file not found: {path}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def _split(requirement: str) -> tuple[str, str]:
    match = _NAME.match(requirement)
    if match is None:
        raise DiscVBRError(f"not a requirement: {requirement!r}")
    return match.group(1), match.group(3).strip()


def unmet_requirements(requirements: Sequence[str], *, version_of: Callable[[str], str] | None = None) -> list[str]:
    """The requirements that are not installed, or installed in a version outside their specifier.

    Parameters
    ----------
    requirements : sequence of str
        PEP 508 requirements (``"scipy>=1.10"``, ``"itk-elastix==0.25.4"``).
    version_of : callable, optional
        Installed version of a distribution name; raises
        :class:`importlib.metadata.PackageNotFoundError` when absent (default:
        :func:`importlib.metadata.version`).

    Returns
    -------
    list of str
        The unmet requirements, as given.
    """
    version_of = version_of or importlib.metadata.version
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:  # without packaging only presence can be checked
        SpecifierSet = None
    unmet = []
    for requirement in requirements:
        name, specifier = _split(requirement)
        try:
            installed = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(requirement)
            continue
        if specifier and SpecifierSet is not None:
            try:
                if Version(installed) not in SpecifierSet(specifier):
                    unmet.append(requirement)
            except InvalidVersion:
                unmet.append(requirement)
    return unmet


def protected_constraints(*, version_of: Callable[[str], str] | None = None) -> list[str]:
    """pip constraint lines pinning the installed :data:`PROTECTED_PACKAGES` (``"numpy==2.1.3"``).

    Packages that are not installed are not constrained.
    """
    version_of = version_of or importlib.metadata.version
    lines = []
    for name in PROTECTED_PACKAGES:
        try:
            lines.append(f"{name}=={version_of(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


def _install(slicer, missing: list[str], constraints: Path) -> None:
    pydeps = getattr(slicer, "pydeps", None)
    if pydeps is not None and hasattr(pydeps, "pip_ensure"):
        pydeps.pip_ensure(pydeps.load_requirements(str(REQUIREMENTS_FILE)), constraints=str(constraints),
                          requester="DiscVBR")
        return
    question = (
        "DiscVBR needs these Python packages, which are not installed:\n\n" + "\n".join(missing)
        + "\n\nInstall them now? This may take a few minutes."
    )
    if not slicer.util.confirmOkCancelDisplay(question, "DiscVBR: install Python packages"):
        raise DiscVBRError(f"DiscVBR cannot run without: {', '.join(missing)}")
    # a list goes to pip as its arguments, on every Slicer version
    slicer.util.pip_install(["-c", str(constraints), *missing])


def ensure_slicer_dependencies(*, log: Callable[[str], None] = print) -> None:
    """Make sure torch and DiscVBR's packages are importable in 3D Slicer, asking before installing.

    Raises
    ------
    DiscVBRError
        When the PyTorch extension is missing, or the user declines, or something is still
        missing afterwards (the message lists what).
    """
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        raise DiscVBRError(
            "DiscVBR needs the PyTorch extension: install it from the Extensions Manager and restart 3D Slicer"
        ) from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        log("PyTorch is not installed; asking to install it (PyTorch extension)")
        if torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise DiscVBRError("PyTorch is needed for disc segmentation and was not installed")
    requirements = read_requirements()
    missing = unmet_requirements(requirements)
    if not missing:
        return
    log(f"missing Python packages: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="discvbr-pip-") as folder:
        constraints = Path(folder) / "slicer-constraints.txt"
        constraints.write_text("\n".join(protected_constraints()) + "\n")
        _install(slicer, missing, constraints)
    still = unmet_requirements(requirements)
    if still:
        raise DiscVBRError(f"these Python packages are still missing or too old: {', '.join(still)} (see the Python console)")
    log("Python packages installed")
