"""MRML glue: DiscVBR's images, series, label maps, meshes and transforms as 3D Slicer nodes.

The one place where the logic layer meets the MRML scene; the three Slicer modules
(DiscSegmentation, DiscRelaxometry, DiscStatistics) and the scene demo use it, inside
3D Slicer and headless with the ``slicer-core`` wheels. ``slicer`` and VTK are imported
inside the functions, never when this module is imported.

Conventions
-----------
* Geometry: an :class:`~discvbr.io.Image` affine (voxel index -> RAS mm) is a volume
  node's IJKToRAS matrix. VTK image data are x-fastest, so the numpy array indexed
  ``(i, j, k)`` is stored transposed; :func:`volume_from_image` and
  :func:`image_from_volume` do that, and a volume under a linear transform is read in
  world coordinates.
* Disc label maps (1 = L5S1 ... 5 = L1L2) become segmentation nodes with five segments
  whose IDs and names are the level names and whose colours are
  :data:`discvbr.levels.DISC_COLOURS`; missing discs are empty segments, so they can be
  painted in the Segment Editor. :func:`labels_from_segmentation` reads them back by name.
* Colours of maps come from :class:`discvbr.render.ColourScale`, the same as the figures:
  :func:`colour_table_from_scale` turns one into a colour table node sampled on a linear
  value axis (p values, whose scale is logarithmic, are sampled finely enough that every
  colour of the log scale appears), used by volume and model display nodes alike.
* Nothing half-made stays in a scene: code that creates several nodes runs inside
  :class:`NodeTransaction`, which removes every node it added when an exception escapes.


Modules
-------
``scene``          headless scenes, .mrb bundles, :class:`~discvbr.mrml.scene.NodeTransaction`, folders
``arrays``         numpy <-> VTK matrices and image data
``volumes``        volume nodes <-> :class:`~discvbr.io.Image`
``series``         echo series from volumes, sequences and multi-volumes; sequences from series
``segmentations``  disc label maps <-> segmentation nodes
``colours``        colour tables from colour scales; volumes shown through them
``legends``        colour legends with title and units
``models``         model nodes; the spine figure as models
``transforms``     per-disc registrations as grid transforms
``tables``         table nodes <-> data frames
``plots``          plot charts of curves

Import the functions from their module (``from discvbr.mrml.volumes import volume_from_image``);
this package file imports nothing, so importing one part never loads the others.
"""
