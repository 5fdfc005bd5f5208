"""Scans: reading, dual-energy material rendering, display modes, simulation and TIP.

* :mod:`~xrayscreen.imaging.scan`: the :class:`Scan` value every reader returns.
* :mod:`~xrayscreen.imaging.readers`: :func:`open_scan` (PNG/JPEG/BMP/TIFF, ``.npy``,
  DICOS; dual-energy pairs by name), on top of :mod:`decoders` and :mod:`dicos`.
* :mod:`~xrayscreen.imaging.physics`: the beam model (tube spectrum, sandwich detector,
  xraydb attenuation) shared by the colour table and the simulator.
* :mod:`~xrayscreen.imaging.material`: ``R = ln(I_L)/ln(I_H)`` and the 2-D false-colour
  table (built by :mod:`build_colour_table`, shipped in ``resources/``).
* :mod:`~xrayscreen.imaging.enhance`: display modes and brightness/contrast/gamma.
* :mod:`~xrayscreen.imaging.simulator`: physics-based bags with ground truth.
* :mod:`~xrayscreen.imaging.tip`: threat image projection into real scans.
* :mod:`~xrayscreen.imaging.demo`: the bundled demo scans.
* :mod:`~xrayscreen.imaging.representation`: model inputs and the working scale.

Submodules are imported on demand so that ``import xrayscreen.imaging`` stays cheap.
"""
