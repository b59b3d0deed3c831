"""Maps on the spine mesh: scene elements (polydata + colours) and off-screen VTK rendering.

A :class:`SpineScene` is a list of :class:`SceneElement` s (vtkPolyData with either a solid
colour or cell scalars coloured through the scene's :class:`~discvbr.render.colours.ColourScale`):
the semi-transparent vertebral bodies and discs of the atlas (:mod:`discvbr.render.mesh`),
and each disc's map drawn as a sagittal plane of voxel-sized quads at its physical place
(one slice for 2D data, the two central slices for 3D data, as in Iriondo et al., MRM 2020,
figures 5-7), outlined in the disc's colour. The same elements are what the Slicer module
shows as model nodes; :func:`render_scene` draws them off screen to an RGB array.

Off-screen rendering: on Linux without a display, VTK (9.4 and later, PyPI wheels) renders
through EGL, which Mesa provides on machines without a GPU (llvmpipe; Debian/Ubuntu packages
``libegl1 libegl-mesa0 libgl1-mesa-dri``). ``VTK_DEFAULT_OPENGL_WINDOW`` still chooses
another window class (``vtkOSOpenGLRenderWindow`` with ``libOSMesa``). When no context can be
made, :func:`render_scene` raises :class:`~discvbr.DiscVBRError` saying what to install,
instead of letting VTK crash.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image, atomic_write
from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.render.colours import ColourScale, colour_scale
from discvbr.render.mesh import BODY_NAMES, spine_mesh

__all__ = [
    "CAMERA_PRESETS",
    "CameraView",
    "SceneElement",
    "SpineScene",
    "RenderedFigure",
    "map_plane",
    "central_slices",
    "split_maps",
    "build_scene",
    "render_scene",
    "render_spine_maps",
    "write_png",
]

#: Camera presets: azimuth (degrees from the patient's left towards anterior), elevation
#: (degrees up) and projection. "sagittal" looks from the left, anterior on the image's left.
CAMERA_PRESETS: dict[str, tuple[float, float, bool]] = {
    "sagittal": (0.0, 0.0, True),
    "sagittal-right": (180.0, 0.0, True),
    "oblique": (35.0, 20.0, False),
    "posterior-oblique": (-35.0, 20.0, False),
}
BONE_COLOUR = (0.89, 0.85, 0.79)
_VIEW_ANGLE_DEG = 30.0
_FIT_MARGIN = 1.08


@dataclass(frozen=True)
class SceneElement:
    """One thing drawn in the scene.

    Attributes
    ----------
    name : str
        ``"L4"``, ``"L4L5"``, ``"L4L5 map slice 2"``, ``"L4L5 outline slice 2"``.
    role : {"vertebra", "disc", "map", "outline"}
    polydata : vtkPolyData
        In RAS millimetres.
    level : str or None
        Disc level of discs, maps and outlines.
    colour : tuple of float or None
        Solid RGB (0..1); None for maps, which are coloured by ``scalars``.
    opacity : float
    scalars : str or None
        Name of the cell-data array of a map (coloured through the scene's scale).
    panel : int or None
        Panel (central slice number) a map belongs to; None: shown in every panel.
    slice_index : int or None
        Index along axis 0 of the map's grid of a map plane.
    """

    name: str
    role: str
    polydata: object
    level: str | None = None
    colour: tuple[float, float, float] | None = None
    opacity: float = 1.0
    scalars: str | None = None
    panel: int | None = None
    slice_index: int | None = None


@dataclass(frozen=True)
class SpineScene:
    """Elements, colour scale, panels and disc label anchors of a figure."""

    elements: tuple[SceneElement, ...]
    scale: ColourScale
    panel_titles: tuple[str, ...]
    label_anchors: dict[str, np.ndarray]
    bounds: np.ndarray  # (xmin, xmax, ymin, ymax, zmin, zmax) RAS mm of the spine

    @property
    def n_panels(self) -> int:
        return len(self.panel_titles)


@dataclass(frozen=True)
class CameraView:
    """Camera of one panel, enough to project RAS points to image pixels.

    ``viewport`` is ``(col0, row0, col1, row1)`` in image pixels, rows counted from the top.
    ``parallel_scale`` is half the viewport height in mm (parallel projection);
    ``view_angle`` the vertical view angle in degrees (perspective).
    """

    position: np.ndarray
    focal_point: np.ndarray
    view_up: np.ndarray
    parallel: bool
    parallel_scale: float
    view_angle: float
    viewport: tuple[int, int, int, int]


@dataclass(frozen=True)
class RenderedFigure:
    """An off-screen rendering: RGB pixels, the camera of each panel, the colour bar's place."""

    image: np.ndarray  # (H, W, 3) uint8, row 0 at the top
    cameras: tuple[CameraView, ...]
    colour_bar_box: tuple[int, int, int, int] | None  # (col0, row0, col1, row1) of the colour-bar strip
    scale: ColourScale
    window_class: str


# --------------------------------------------------------------------------- maps -> planes


def split_maps(atlas: Image, maps: Image | Mapping[str, Image]) -> dict[str, Image]:
    """One map image per disc level.

    Parameters
    ----------
    atlas : Image
        Atlas labels (discs 1-5 = L5S1 ... L1L2, vertebrae ignored).
    maps : Image or mapping of str to Image
        One map on the atlas grid holding every disc (split by the atlas' disc labels), or
        one map per disc level (on any grid; NaN outside the disc).

    Returns
    -------
    dict of str to Image
        Per level, NaN outside the disc; levels without a finite value are left out.

    Raises
    ------
    DiscVBRError
        Unknown level names, maps that are not 3D, a single map not on the atlas grid,
        no finite value at all.
    """
    out: dict[str, Image] = {}
    if isinstance(maps, Image):
        if not maps.same_grid(atlas) or np.asarray(maps.array).ndim != 3:
            raise DiscVBRError(
                f"map of shape {maps.shape} is not on the atlas grid {atlas.shape}; give one 3D map on the "
                "atlas grid, or one map per disc level"
            )
        values = np.asarray(maps.array, dtype=np.float32)
        labels = np.asarray(atlas.array)
        for label, level in enumerate(DISC_LEVELS, start=1):
            disc = np.where(labels == label, values, np.nan)
            if np.isfinite(disc).any():
                out[level] = Image(disc, maps.affine)
    else:
        for level, image in maps.items():
            if level not in DISC_LEVELS:
                raise DiscVBRError(f"map for unknown disc level {level!r}; expected one of {', '.join(DISC_LEVELS)}")
            values = np.asarray(image.array, dtype=np.float32)
            if values.ndim != 3:
                raise DiscVBRError(f"{level} map must be a 3D volume (X, Y, Z), got shape {values.shape}")
            if np.isfinite(values).any():
                out[level] = Image(values, image.affine)
        out = {level: out[level] for level in DISC_LEVELS if level in out}
    if not out:
        raise DiscVBRError("the maps hold no finite value inside any disc")
    return out


def central_slices(values: np.ndarray, *, count: int = 2) -> list[int]:
    """The ``count`` slices (axis 0) nearest the lateral centre of a disc's finite values.

    One slice when the map has a single slice with data (2D data).
    """
    counts = np.isfinite(values).sum(axis=(1, 2))
    present = np.flatnonzero(counts)
    if present.size <= 1:
        return present.tolist()
    centre = float(np.sum(present * counts[present]) / counts[present].sum())
    order = sorted(present.tolist(), key=lambda i: (abs(i - centre), i))
    return sorted(order[:count])


def map_plane(image: Image, slice_index: int, *, name: str = "value"):
    """A map slice as polydata: one quad per finite voxel, at the voxel's physical place.

    Parameters
    ----------
    image : Image
        Map, shape (X, Y, Z); NaN where there is nothing to draw.
    slice_index : int
        Index along axis 0 (the sagittal slice).
    name : str
        Name of the cell-data array that holds the values.

    Returns
    -------
    vtkPolyData
        Quads in the slice's mid-plane, corners at voxel edges (RAS mm), values as cell data.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    values = np.asarray(image.array[slice_index], dtype=np.float32)
    js, ks = np.nonzero(np.isfinite(values))
    ny, nz = values.shape
    # corner (a, b) of the voxel grid sits at index (slice, a - 0.5, b - 0.5)
    corner_ids = np.stack([js * (nz + 1) + ks, (js + 1) * (nz + 1) + ks, (js + 1) * (nz + 1) + ks + 1, js * (nz + 1) + ks + 1], axis=1)
    used, inverse = np.unique(corner_ids, return_inverse=True)
    a, b = np.divmod(used, nz + 1)
    index = np.stack([np.full(a.shape, float(slice_index)), a - 0.5, b - 0.5, np.ones(a.shape)], axis=0)
    points_ras = (image.affine @ index)[:3].T
    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(points_ras, dtype=np.float64), deep=True))
    connectivity = inverse.reshape(-1, 4).astype(np.int64)
    cells = vtkCellArray()
    offsets = np.arange(0, connectivity.size + 1, 4, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True), numpy_to_vtkIdTypeArray(connectivity.ravel(), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    scalars = numpy_to_vtk(np.ascontiguousarray(values[js, ks]), deep=True)
    scalars.SetName(name)
    poly.GetCellData().SetScalars(scalars)
    return poly


def _outline(poly):
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkFiltersCore import vtkFeatureEdges

    edges = vtkFeatureEdges()
    edges.SetInputData(poly)
    edges.BoundaryEdgesOn()
    edges.FeatureEdgesOff()
    edges.NonManifoldEdgesOff()
    edges.ManifoldEdgesOff()
    edges.ColoringOff()
    edges.Update()
    out = vtkPolyData()
    out.DeepCopy(edges.GetOutput())
    return out


def build_scene(
    atlas: Image,
    maps: Image | Mapping[str, Image],
    *,
    kind: str = "T",
    quantity: str = "T1rho",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.05,
    slices: Sequence[int] | None = None,
    mesh: Mapping[str, object] | None = None,
    bone_opacity: float = 0.18,
    disc_opacity: float = 0.35,
    mapped_disc_opacity: float = 0.1,
) -> SpineScene:
    """Everything a spine-map figure shows, as polydata with colours.

    Parameters
    ----------
    atlas : Image
        Atlas label map (spine or disc labels; see :func:`discvbr.render.mesh.spine_parts`).
    maps : Image or mapping of str to Image
        The map(s) to draw (see :func:`split_maps`): relaxation times (ms), r, p, t or
        differences, NaN outside the discs.
    kind : {"T", "r", "t", "delta", "p"}
        Map kind: chooses the colour scale (:func:`discvbr.render.colours.colour_scale`).
    quantity : str
        Relaxation time named in titles.
    vmin, vmax : float, optional
        Colour range (defaults per kind).
    alpha : float
        Significance level marked on p scales.
    slices : sequence of int, optional
        Slices (axis 0 of the map grid) to draw for every disc, one panel each. By default
        the single slice of 2D data or the two central slices of each disc for 3D data.
    mesh : mapping, optional
        Spine surfaces from :func:`discvbr.render.mesh.spine_mesh` (built from ``atlas`` when
        not given; pass them to draw several figures of one atlas).
    bone_opacity, disc_opacity, mapped_disc_opacity : float
        Opacity of the vertebral bodies, of discs without a map and of discs with a map
        (faint, so that the map's colours seen through the disc surface stay true; the
        map is outlined and labelled in the disc's colour).

    Returns
    -------
    SpineScene
    """
    per_level = split_maps(atlas, maps)
    all_values = np.concatenate([m.array[np.isfinite(m.array)].ravel() for m in per_level.values()])
    scale = colour_scale(kind, values=all_values, vmin=vmin, vmax=vmax, alpha=alpha, quantity=quantity)
    surfaces = dict(mesh) if mesh is not None else spine_mesh(atlas)
    elements: list[SceneElement] = []
    for name, poly in surfaces.items():
        if name in BODY_NAMES:
            elements.append(SceneElement(name, "vertebra", poly, colour=BONE_COLOUR, opacity=bone_opacity))
        else:
            opacity = mapped_disc_opacity if name in per_level else disc_opacity
            elements.append(SceneElement(name, "disc", poly, level=name, colour=DISC_COLOURS[name], opacity=opacity))
    chosen: dict[str, list[int]] = {}
    for level, image in per_level.items():
        if slices is None:
            chosen[level] = central_slices(np.asarray(image.array))
        else:
            n = image.shape[0]
            bad = [s for s in slices if not 0 <= int(s) < n]
            if bad:
                raise DiscVBRError(f"{level} map has {n} slice(s); slice index {bad[0]} does not exist")
            chosen[level] = [int(s) for s in slices]
    n_panels = max(len(v) for v in chosen.values())
    for level, image in per_level.items():
        for panel, index in enumerate(chosen[level]):
            plane = map_plane(image, index, name=scale.title)
            if plane.GetNumberOfCells() == 0:
                continue
            elements.append(SceneElement(f"{level} map slice {index}", "map", plane, level=level, scalars=scale.title, panel=panel, slice_index=index))
            elements.append(
                SceneElement(f"{level} outline slice {index}", "outline", _outline(plane), level=level, colour=DISC_COLOURS[level], panel=panel, slice_index=index)
            )
    titles = _panel_titles(per_level, chosen, n_panels)
    bounds = _bounds([e.polydata for e in elements])
    anchors = {}
    for element in elements:
        if element.role == "disc" or (element.role == "map" and element.level not in surfaces):
            b = np.asarray(element.polydata.GetBounds())
            anchors.setdefault(element.level, np.array([0.5 * (b[0] + b[1]), b[3] + 6.0, 0.5 * (b[4] + b[5])]))
    return SpineScene(tuple(elements), scale, titles, anchors, bounds)


def _panel_titles(per_level: dict[str, Image], chosen: dict[str, list[int]], n_panels: int) -> tuple[str, ...]:
    if n_panels == 1:
        only = next(iter(chosen.values()))
        if len(set(tuple(v) for v in chosen.values())) == 1 and next(iter(per_level.values())).shape[0] > 1:
            return (f"slice {only[0]}",)
        return ("",)
    titles = []
    for panel in range(n_panels):
        indices = {lvl: v[panel] for lvl, v in chosen.items() if len(v) > panel}
        affines = [per_level[lvl].affine for lvl in indices]
        xs = {round(float((a @ np.array([i, 0, 0, 1.0]))[0]), 1) for a, i in zip(affines, indices.values())}
        if len(set(indices.values())) == 1 and len(xs) == 1:
            titles.append(f"slice {next(iter(indices.values()))} (R {xs.pop():+.1f} mm)")
        else:
            titles.append(f"central slice {panel + 1}")
    return tuple(titles)


def _bounds(polys: Sequence[object]) -> np.ndarray:
    boxes = np.array([p.GetBounds() for p in polys if p.GetNumberOfPoints() > 0], dtype=float)
    return np.array([boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max(), boxes[:, 4].min(), boxes[:, 5].max()])


# --------------------------------------------------------------------------- rendering


def _offscreen_window(width: int, height: int):
    """An off-screen OpenGL render window that can really render, or a DiscVBRError."""
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL window classes)
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    chosen = os.environ.get("VTK_DEFAULT_OPENGL_WINDOW")
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if chosen is None and headless:
        # straight to EGL: the default factory would first try (and warn about) X
        from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow

        window = vtkEGLRenderWindow()
    else:
        window = vtkRenderWindow()
    name = window.GetClassName()
    hint = (
        "On Linux without a display, install Mesa's EGL (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 "
        "libgl1-mesa-dri), or OSMesa (libosmesa6) with VTK_DEFAULT_OPENGL_WINDOW=vtkOSOpenGLRenderWindow; "
        "or run where a display is available."
    )
    if name == "vtkOSOpenGLRenderWindow" and ctypes.util.find_library("OSMesa") is None:
        raise DiscVBRError(f"VTK off-screen rendering through OSMesa needs libOSMesa, which is not installed. {hint}")
    window.SetOffScreenRendering(True)
    window.SetSize(int(width), int(height))
    # depth peeling (correct see-through surfaces) needs alpha planes and no multisampling
    window.SetAlphaBitPlanes(True)
    window.SetMultiSamples(0)
    if not window.SupportsOpenGL():
        raise DiscVBRError(f"VTK could not create an off-screen OpenGL 3.2 context ({name}). {hint}")
    return window


def _camera_view(
    bounds: np.ndarray, preset: str, viewport_px: tuple[int, int, int, int], zoom: float
) -> CameraView:
    if preset not in CAMERA_PRESETS:
        raise DiscVBRError(f"unknown camera {preset!r}; expected one of {', '.join(CAMERA_PRESETS)}")
    azimuth, elevation, parallel = CAMERA_PRESETS[preset]
    a, e = np.radians(azimuth), np.radians(elevation)
    # direction of projection: from the patient's left (+R) turned towards anterior, tilted down
    direction = np.array([np.cos(e) * np.cos(a), -np.cos(e) * np.sin(a), -np.sin(e)])
    up = np.array([0.0, 0.0, 1.0]) - direction * direction[2]
    up /= np.linalg.norm(up)
    right = np.cross(direction, up)
    centre = np.array([0.5 * (bounds[0] + bounds[1]), 0.5 * (bounds[2] + bounds[3]), 0.5 * (bounds[4] + bounds[5])])
    corners = np.array([[x, y, z] for x in bounds[:2] for y in bounds[2:4] for z in bounds[4:]]) - centre
    half_up = np.abs(corners @ up).max()
    half_right = np.abs(corners @ right).max()
    half_depth = np.abs(corners @ direction).max()
    col0, row0, col1, row1 = viewport_px
    aspect = (col1 - col0) / max(row1 - row0, 1)
    half_height = max(half_up, half_right / aspect) * _FIT_MARGIN / zoom
    if parallel:
        distance = 4.0 * half_depth + 100.0
    else:
        distance = half_height / np.tan(np.radians(0.5 * _VIEW_ANGLE_DEG)) + half_depth
    return CameraView(
        position=centre - direction * distance,
        focal_point=centre,
        view_up=up,
        parallel=parallel,
        parallel_scale=float(half_height),
        view_angle=_VIEW_ANGLE_DEG,
        viewport=viewport_px,
    )


def _actor(element: SceneElement, scale_lut):
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    mapper = vtkPolyDataMapper()
    mapper.SetInputData(element.polydata)
    actor = vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    if element.role == "map":
        mapper.SetLookupTable(scale_lut)
        mapper.SetScalarModeToUseCellData()
        mapper.ScalarVisibilityOn()
        mapper.UseLookupTableScalarRangeOn()
        # flat, unlit colours: a pixel shows the colour-bar colour of its value
        prop.LightingOff()
        mapper.SetResolveCoincidentTopologyToPolygonOffset()
    else:
        mapper.ScalarVisibilityOff()
        prop.SetColor(*element.colour)
        prop.SetOpacity(element.opacity)
        if element.role == "outline":
            prop.LightingOff()
            prop.SetLineWidth(2.0)
        else:
            prop.SetSpecular(0.15)
            prop.SetSpecularPower(20.0)
    return actor


def render_scene(
    scene: SpineScene,
    *,
    size: tuple[int, int] = (900, 1000),
    camera: str = "sagittal",
    zoom: float = 1.0,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    colour_bar: bool = True,
    level_labels: bool = True,
    title: str | None = None,
    exact_transparency: bool = False,
) -> RenderedFigure:
    """Draw a scene off screen.

    Parameters
    ----------
    scene : SpineScene
    size : (int, int)
        Image width and height in pixels.
    camera : str
        A :data:`CAMERA_PRESETS` name.
    zoom : float
        Magnification over the fit of the whole spine.
    background : tuple of float
        RGB 0..1.
    colour_bar : bool
        Draw the colour bar (with the scale's title and units) in a strip on the right.
    level_labels : bool
        Write each disc's level beside it, in its colour.
    title : str, optional
        Text at the top of the figure.
    exact_transparency : bool
        Depth-peel the see-through surfaces (exact blending where they overlap each other;
        about 2-3 times slower with Mesa's software rasteriser). The maps are opaque and
        always correctly hidden or shown; without peeling, overlapping see-through surfaces
        blend in drawing order, which the sagittal views barely show.

    Returns
    -------
    RenderedFigure

    Raises
    ------
    DiscVBRError
        No off-screen OpenGL context could be made (see the module docstring), bad size.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor
    from vtkmodules.vtkRenderingCore import (
        vtkBillboardTextActor3D,
        vtkRenderer,
        vtkWindowToImageFilter,
    )

    width, height = (int(v) for v in size)
    if width < 64 or height < 64:
        raise DiscVBRError(f"image size must be at least 64 x 64 pixels, got {width} x {height}")
    window = _offscreen_window(width, height)
    lut = scene.scale.lookup_table()
    font = max(int(round(height / 45)), 10)
    bar_width = 0
    if colour_bar:
        # labels left of the bar, the alpha mark (p maps) right of it
        bar_width = max(int(0.62 * font * (len(scene.scale.title) + 2)), int(0.12 * width), 7 * font)
        bar_width += 7 * font if scene.scale.alpha is not None else 0
    panel_width = (width - bar_width) / scene.n_panels
    title_px = int(0.05 * height) if title else 0
    panel_title_px = int(0.04 * height) if any(scene.panel_titles) else 0
    window.SetNumberOfLayers(2)
    backdrop = vtkRenderer()
    backdrop.SetBackground(*background)
    window.AddRenderer(backdrop)
    overlay = vtkRenderer()
    overlay.SetLayer(1)
    overlay.InteractiveOff()
    cameras = []
    for panel in range(scene.n_panels):
        renderer = vtkRenderer()
        col0, col1 = int(round(panel * panel_width)), int(round((panel + 1) * panel_width))
        row0, row1 = title_px + panel_title_px, height
        renderer.SetViewport(col0 / width, (height - row1) / height, col1 / width, (height - row0) / height)
        renderer.SetBackground(*background)
        if exact_transparency:
            renderer.SetUseDepthPeeling(True)
            renderer.SetMaximumNumberOfPeels(4)
            renderer.SetOcclusionRatio(0.05)
        for element in scene.elements:
            if element.panel is None or element.panel == panel:
                renderer.AddActor(_actor(element, lut))
        if level_labels:
            for level, anchor in scene.label_anchors.items():
                text = vtkBillboardTextActor3D()
                text.SetInput(level)
                text.SetPosition(*anchor)
                prop = text.GetTextProperty()
                prop.SetFontSize(font)
                prop.BoldOn()
                prop.SetColor(*DISC_COLOURS[level])
                prop.SetJustificationToCentered()
                prop.SetVerticalJustificationToCentered()
                renderer.AddActor(text)
        view = _camera_view(scene.bounds, camera, (col0, row0, col1, row1), zoom)
        vtk_camera = renderer.GetActiveCamera()
        vtk_camera.SetPosition(*view.position)
        vtk_camera.SetFocalPoint(*view.focal_point)
        vtk_camera.SetViewUp(*view.view_up)
        vtk_camera.SetParallelProjection(view.parallel)
        vtk_camera.SetParallelScale(view.parallel_scale)
        vtk_camera.SetViewAngle(view.view_angle)
        renderer.ResetCameraClippingRange()
        window.AddRenderer(renderer)
        cameras.append(view)
        if scene.panel_titles[panel]:
            overlay.AddViewProp(_text(scene.panel_titles[panel], (col0 + col1) / 2 / width, 1 - (title_px + 0.5 * panel_title_px) / height, font))
    if title:
        # a character is about 0.55 font sizes wide: shrink a long title to fit the width
        title_font = max(min(int(font * 1.2), int(0.95 * width / (0.55 * len(title)))), 8)
        overlay.AddViewProp(_text(title, 0.5, 1 - 0.5 * title_px / height, title_font))
    window.AddRenderer(overlay)
    bar_box = None
    if colour_bar:
        strip = vtkRenderer()
        strip.SetViewport((width - bar_width) / width, 0.0, 1.0, 1.0)
        strip.SetBackground(*background)
        bar = vtkScalarBarActor()
        bar.SetLookupTable(lut)
        bar.SetTitle(scene.scale.title)
        bar.SetNumberOfLabels(5)
        bar.SetLabelFormat("%.3g")
        bar.SetMaximumNumberOfColors(lut.GetNumberOfTableValues())
        bar.DrawAnnotationsOn() if scene.scale.alpha is not None else bar.DrawAnnotationsOff()
        bar.SetTextPositionToPrecedeScalarBar()
        bar.SetPosition(0.04, 0.1)
        bar.SetWidth(0.9 if scene.scale.alpha is None else 0.55)
        bar.SetHeight(0.75)
        bar.SetBarRatio(0.45)
        bar.SetVerticalTitleSeparation(font // 2)
        bar.UnconstrainedFontSizeOn()
        for prop in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty(), bar.GetAnnotationTextProperty()):
            prop.SetColor(0.1, 0.1, 0.1)
            prop.SetFontSize(font)
            prop.ItalicOff()
            prop.ShadowOff()
        bar.GetTitleTextProperty().BoldOn()
        strip.AddViewProp(bar)
        window.AddRenderer(strip)
        bar_box = (width - bar_width, 0, width, height)
    window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.ShouldRerenderOff()  # the window has just been rendered
    grab.Update()
    output = grab.GetOutput()
    pixels = vtk_to_numpy(output.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    name = window.GetClassName()
    window.Finalize()
    return RenderedFigure(np.ascontiguousarray(pixels), tuple(cameras), bar_box, scene.scale, name)


def _text(text: str, x: float, y: float, font: int):
    from vtkmodules.vtkRenderingCore import vtkTextActor

    actor = vtkTextActor()
    actor.SetInput(text)
    actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedDisplay()
    actor.GetPositionCoordinate().SetValue(x, y)
    prop = actor.GetTextProperty()
    prop.SetFontSize(font)
    prop.SetColor(0.1, 0.1, 0.1)
    prop.SetJustificationToCentered()
    prop.SetVerticalJustificationToCentered()
    return actor


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    from matplotlib.image import imsave

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DiscVBRError(f"{path}: figures are written as PNG (.png)")
    with atomic_write(path) as tmp:
        imsave(tmp, np.asarray(image, dtype=np.uint8), format="png")
    return path


def render_spine_maps(
    atlas: Image,
    maps: Image | Mapping[str, Image],
    *,
    kind: str = "T",
    quantity: str = "T1rho",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.05,
    slices: Sequence[int] | None = None,
    mesh: Mapping[str, object] | None = None,
    size: tuple[int, int] = (900, 1000),
    camera: str = "sagittal",
    zoom: float = 1.0,
    title: str | None = None,
    out: str | os.PathLike | None = None,
) -> RenderedFigure:
    """Draw per-disc maps on the atlas' spine mesh off screen (and write a PNG).

    Parameters are those of :func:`build_scene` and :func:`render_scene`; ``out`` is an
    optional PNG path.

    Returns
    -------
    RenderedFigure
    """
    scene = build_scene(atlas, maps, kind=kind, quantity=quantity, vmin=vmin, vmax=vmax, alpha=alpha, slices=slices, mesh=mesh)
    figure = render_scene(scene, size=size, camera=camera, zoom=zoom, title=title)
    if out is not None:
        write_png(out, figure.image)
    return figure
