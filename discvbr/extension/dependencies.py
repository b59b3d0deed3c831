"""The Python packages DiscVBR needs inside 3D Slicer, checked and installed on first use.

``discvbr/data/slicer-requirements.txt`` lists them (the package's own dependencies less
what Slicer ships: numpy and vtk are never replaced, and torch comes from the PyTorch
extension, whose ``PyTorchUtils`` chooses the build matching the machine's CUDA). A module
calls :func:`ensure_slicer_dependencies` with its name when the user first asks it to
compute: only that module's packages are checked (with :mod:`importlib.metadata`), and what
is missing is installed after the user agrees (``pip_ensure`` of ``slicer.packaging`` or
``slicer.pydeps`` where this Slicer has one, else ``slicer.util.pip_install``); self-tests
never install. Every install runs under a pip constraints file that pins
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
    "MODULE_PACKAGES",
    "TORCH_MODULES",
    "module_requirements",
    "imported_upgrades",
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


#: Distributions each module needs (its slice of the requirements file). Only DiscSegmentation
#: runs the network, so only it asks for torch (through the PyTorch extension); DiscStatistics can
#: run the whole pipeline on a manifest, so it needs the registration and the model files' readers.
MODULE_PACKAGES = {
    "DiscSegmentation": ("scipy", "nibabel", "pynrrd", "pandas", "matplotlib", "scikit-image", "safetensors", "typer", "rich"),
    "DiscRelaxometry": ("scipy", "nibabel", "pynrrd", "pandas", "matplotlib", "itk-elastix"),
    "DiscStatistics": (
        "scipy", "numba", "nibabel", "pynrrd", "pandas", "matplotlib", "scikit-image", "safetensors", "typer", "rich", "itk-elastix",
    ),
}
#: Modules that need torch.
TORCH_MODULES = ("DiscSegmentation",)
#: Import names of distributions whose import name differs.
_IMPORT_NAMES = {"scikit-image": "skimage", "pynrrd": "nrrd", "itk-elastix": "itk"}


def module_requirements(module: str, *, path: str | os.PathLike = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines of the requirements file that one module needs.

    Raises
    ------
    DiscVBRError
        Unknown module, or a package of :data:`MODULE_PACKAGES` missing from the file.
    """
    if module not in MODULE_PACKAGES:
        raise DiscVBRError(f"unknown module {module!r}; expected one of {', '.join(MODULE_PACKAGES)}")
    by_name = {_split(r)[0].lower(): r for r in read_requirements(path)}
    absent = [name for name in MODULE_PACKAGES[module] if name.lower() not in by_name]
    if absent:
        raise DiscVBRError(f"{Path(path).name} has no requirement for {', '.join(absent)} (needed by {module})")
    return [by_name[name.lower()] for name in MODULE_PACKAGES[module]]


def imported_upgrades(missing: Sequence[str], *, version_of: Callable[[str], str] | None = None, modules=None) -> list[str]:
    """Distributions among ``missing`` that are installed in another version and already imported.

    Installing those replaces files a running Python has loaded: 3D Slicer must restart to use them.
    """
    import sys

    version_of = version_of or importlib.metadata.version
    modules = sys.modules if modules is None else modules
    upgraded = []
    for requirement in missing:
        name = _split(requirement)[0]
        try:
            version_of(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if _IMPORT_NAMES.get(name, name.replace("-", "_")) in modules:
            upgraded.append(name)
    return upgraded


def _install(slicer, requirements: list[str], constraints: Path) -> None:
    """Install with the newest installer this Slicer has: ``slicer.packaging`` / ``slicer.pydeps`` ``pip_ensure``, else ``pip_install``."""
    for name in ("packaging", "pydeps"):
        installer = getattr(slicer, name, None)
        if installer is not None and hasattr(installer, "pip_ensure"):
            from packaging.requirements import Requirement

            installer.pip_ensure([Requirement(r) for r in requirements], constraints=str(constraints), requester="DiscVBR")
            return
    # a list goes to pip as its arguments, on every Slicer version
    slicer.util.pip_install(["-c", str(constraints), *requirements])


def _testing(slicer) -> bool:
    app = getattr(slicer, "app", None)
    return bool(app is not None and hasattr(app, "testingEnabled") and app.testingEnabled())


def ensure_slicer_dependencies(module: str, *, log: Callable[[str], None] = print) -> None:
    """Make sure the Python packages one module needs are importable in 3D Slicer, asking before installing.

    Only what ``module`` needs is checked (:func:`module_requirements`; torch only for
    :data:`TORCH_MODULES`). Missing packages are installed after the user agrees, under
    constraints that pin what Slicer ships; when an installed package that this Slicer
    session has already imported was upgraded, the user is offered a restart. In testing
    mode (self-tests) nothing is installed and no dialog opens: a missing package is an error.

    Raises
    ------
    DiscVBRError
        When the PyTorch extension is missing, the user declines, a self-test finds a
        package missing, or something is still missing afterwards (the message lists what).
    """
    import slicer

    testing = _testing(slicer)
    if module in TORCH_MODULES:
        _ensure_torch(module, testing=testing, log=log)
    requirements = module_requirements(module)
    missing = unmet_requirements(requirements)
    if not missing:
        return
    if testing:
        raise DiscVBRError(f"{module} needs {', '.join(missing)}; self-tests never install packages: install them first")
    log(f"missing Python packages: {', '.join(missing)}")
    question = (
        f"{module} needs these Python packages, which are missing or too old:\n\n" + "\n".join(missing)
        + "\n\nInstall them now? This may take a few minutes."
    )
    if not slicer.util.confirmOkCancelDisplay(question, "DiscVBR: install Python packages"):
        raise DiscVBRError(f"{module} cannot run without: {', '.join(missing)}")
    upgrades = imported_upgrades(missing)
    with tempfile.TemporaryDirectory(prefix="discvbr-pip-") as folder:
        constraints = Path(folder) / "slicer-constraints.txt"
        constraints.write_text("\n".join(protected_constraints()) + "\n")
        _install(slicer, missing, constraints)
    if upgrades:
        if slicer.util.confirmYesNoDisplay(
            f"{', '.join(upgrades)} were upgraded while an older version is in use. Restart 3D Slicer now to use the new version?",
            "DiscVBR: restart 3D Slicer",
        ):
            slicer.util.restart()
        raise DiscVBRError(f"restart 3D Slicer to use the upgraded {', '.join(upgrades)}")
    still = unmet_requirements(requirements)
    if still:
        raise DiscVBRError(f"these Python packages are still missing or too old: {', '.join(still)} (see the Python console)")
    log("Python packages installed")


def _ensure_torch(module: str, *, testing: bool, log: Callable[[str], None]) -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise DiscVBRError(
            f"{module} needs the PyTorch extension: install it from the Extensions Manager and restart 3D Slicer"
        ) from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return
    if testing:
        raise DiscVBRError(f"{module} needs PyTorch; self-tests never install packages: install it with the PyTorch module first")
    log("PyTorch is not installed; asking to install it (PyTorch extension)")
    if torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
        raise DiscVBRError("PyTorch is needed for disc segmentation and was not installed")
