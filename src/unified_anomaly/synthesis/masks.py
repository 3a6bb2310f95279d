"""Anomaly mask priors: a GAP-Lib-style library of random shape generators.

UniADC's "geometric anomaly prototype library" names its generators ``<Shape>_<Size>`` (``Rectangle_Large``,
``Line_Long``, ``Brush_Tiny``, ``NearCircularHollowEllipse_Small``, ...) plus ``FGI`` (the foreground
itself). A defect type's ``masks`` entry is a substring filter over these names (a list is a union); with
none, every generator except FGI is eligible. Masks are multiplied by the foreground and closed with a 6×6
element. The size parameters below are UniADC's (area as a fraction of the image, pixel widths at 512²);
pixel quantities are scaled to the working resolution. The drawing code is this project's own.

Differences from UniADC, on purpose: shapes are centred on a random foreground pixel (``placement:
anywhere``) or on the foreground's outline (``placement: edge``, a project field for MTD's broken and frayed
edges) instead of a random corner inside the foreground's box; rotations turn a shape about its own centre;
the closing is followed by a second multiplication with the foreground so masks never leave it; masks are
checked against explicit size limits and a maximum number of regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from unified_anomaly.synthesis.foreground import ForegroundGeometry

REFERENCE_SIZE = 512  # resolution at which UniADC's pixel sizes are given
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ShapeSpec:
    """Parameters of one generator. Areas are fractions of the image; pixel sizes are at 512²."""

    kind: str  # rectangle | polygon | ellipse | perlin | brush | foreground
    area: tuple[float, float] = (0.0, 0.0)  # area of one region (min, max)
    aspect: tuple[float, float] = (0.5, 1.0)  # short side / long side
    max_regions: int | None = 1  # regions drawn per mask (1..max); None = as many as the shape yields
    min_coverage: float = (
        0.0  # the mask must cover at least this fraction of the foreground (UniADC's overlap)
    )
    smoothing: int = 0  # Gaussian kernel (px) that rounds corners
    thickness: tuple[int, int] | None = None  # ring width (px) of hollow ellipses
    perlin_scales: tuple[int, int] = (0, 3)  # log2 of the noise lattice resolution, per axis
    perlin_threshold: float = 0.5
    brush_width: tuple[int, int] = (4, 12)  # px
    brush_vertices: tuple[int, int] = (2, 10)
    brush_strokes: int = 3


def _ellipses(
    prefix: str, sizes: dict, aspect: tuple[float, float], thickness: dict | None
) -> dict[str, ShapeSpec]:
    return {
        f"{prefix}_{size}": ShapeSpec(
            "ellipse",
            area=area,
            aspect=aspect,
            max_regions=regions,
            min_coverage=coverage,
            thickness=None if thickness is None else thickness[size],
        )
        for size, (area, regions, coverage) in sizes.items()
    }


GAP_LIBRARY: dict[str, ShapeSpec] = {
    "FGI": ShapeSpec("foreground", max_regions=None),
    "Rectangle_Large": ShapeSpec("rectangle", (0.05, 0.1), (0.3, 1.0), 1, 0.03, smoothing=21),
    "Rectangle_Medium": ShapeSpec("rectangle", (0.01, 0.04), (0.3, 1.0), 1, 0.005, smoothing=15),
    "Rectangle_Small": ShapeSpec("rectangle", (0.005, 0.01), (0.3, 1.0), 2, 0.001, smoothing=7),
    "Line_Large": ShapeSpec("rectangle", (0.01, 0.02), (0.05, 0.1), 1, 0.005, smoothing=7),
    "Line_Medium": ShapeSpec("rectangle", (0.005, 0.01), (0.02, 0.05), 1, 0.002, smoothing=5),
    "Line_Small": ShapeSpec("rectangle", (0.002, 0.005), (0.01, 0.02), 2, 0.001, smoothing=3),
    "Line_Long": ShapeSpec("rectangle", (0.08, 0.15), (0.0005, 0.002), 2, 0.001, smoothing=3),
    "Polygon_Large": ShapeSpec("polygon", (0.01, 0.03), (0.3, 1.0), 1, 0.008, smoothing=21),
    "Polygon_Medium": ShapeSpec("polygon", (0.005, 0.01), (0.3, 1.0), 1, 0.003, smoothing=15),
    "Polygon_Small": ShapeSpec("polygon", (0.002, 0.005), (0.3, 1.0), 2, 0.001, smoothing=7),
    "Perlin_Large": ShapeSpec("perlin", max_regions=None, min_coverage=0.02, perlin_scales=(0, 1)),
    "Perlin_Medium": ShapeSpec("perlin", max_regions=None, min_coverage=0.01, perlin_scales=(2, 3)),
    "Perlin_Small": ShapeSpec("perlin", max_regions=None, min_coverage=0.005, perlin_scales=(4, 5)),
    # UniADC draws randint(max_tries) strokes and redraws empty masks: 1 stroke for Large/Tiny, 1..3 otherwise
    "Brush_Large": ShapeSpec(
        "brush", max_regions=1, min_coverage=0.01, brush_width=(18, 24), brush_strokes=1
    ),
    "Brush_Medium": ShapeSpec(
        "brush", max_regions=3, min_coverage=0.005, brush_width=(12, 18), brush_strokes=3
    ),
    "Brush_Small": ShapeSpec(
        "brush", max_regions=3, min_coverage=0.001, brush_width=(6, 12), brush_strokes=3
    ),
    "Brush_Tiny": ShapeSpec(
        "brush",
        max_regions=1,
        min_coverage=0.0001,
        brush_width=(4, 8),
        brush_vertices=(1, 3),
        brush_strokes=1,
    ),
    **_ellipses(
        "NearCircularEllipse",
        {
            "Large": ((0.015, 0.03), 1, 0.01),
            "Medium": ((0.005, 0.015), 1, 0.003),
            "Small": ((0.0002, 0.001), 2, 0.0001),
        },
        (0.5, 1.0),
        None,
    ),
    **_ellipses(
        "EccentricEllipse",
        {
            "Large": ((0.01, 0.02), 1, 0.005),
            "Medium": ((0.005, 0.008), 1, 0.003),
            "Small": ((0.002, 0.005), 2, 0.001),
        },
        (0.1, 0.25),
        None,
    ),
    **_ellipses(
        "NearCircularHollowEllipse",
        {
            "Large": ((0.015, 0.03), 1, 0.0075),
            "Medium": ((0.005, 0.015), 1, 0.0025),
            "Small": ((0.001, 0.005), 2, 0.0005),
        },
        (0.5, 1.0),
        {"Large": (12, 24), "Medium": (8, 16), "Small": (4, 10)},
    ),
    **_ellipses(
        "EccentricHollowEllipse",
        {
            "Large": ((0.01, 0.02), 1, 0.005),
            "Medium": ((0.005, 0.008), 1, 0.0025),
            "Small": ((0.002, 0.005), 2, 0.0005),
        },
        (0.1, 0.25),
        {"Large": (12, 20), "Medium": (8, 12), "Small": (4, 8)},
    ),
}


def select_generators(
    filters: str | Sequence[str] | None, library: dict[str, ShapeSpec] | None = None
) -> list[str]:
    """Generator names matching UniADC's rule: any filter a substring of the name; none = all but FGI."""
    library = GAP_LIBRARY if library is None else library
    if filters is None or (not isinstance(filters, str) and len(filters) == 0):
        names = [name for name in library if not name.startswith("FG")]
    else:
        wanted = [filters] if isinstance(filters, str) else list(filters)
        names = [name for name in library if any(item in name for item in wanted)]
    if not names:
        raise ValueError(f"mask filter {filters!r} matches no generator; known: {sorted(library)}")
    return sorted(names)


@dataclass(frozen=True)
class MaskSettings:
    """Post-processing and limits shared by every generator (``synthesize.masks`` in the parameters)."""

    closing_kernel: int = 6  # px at 512²
    reference_size: int = REFERENCE_SIZE
    max_regions: int = 4  # cap on connected regions per mask, on top of each generator's own
    min_area_px: int = 4  # masks smaller than this are redrawn
    max_area_fraction: float = 0.5  # hard cap on the mask area, as a fraction of the image
    area_slack: float = 1.6  # allowance over a generator's nominal area (smoothing, closing, rasterising)
    edge_band: float = 0.12  # width of the band along the outline for `placement: edge`, fraction of the side
    max_tries: int = 60

    @classmethod
    def from_config(cls, config: dict | None) -> MaskSettings:
        config = dict(config or {})
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown mask settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**config)


def area_limits(spec: ShapeSpec, size: int, settings: MaskSettings) -> tuple[int, int]:
    """(min, max) area in pixels a finished mask of this generator may have at ``size``²."""
    total = size * size
    upper = settings.max_area_fraction * total
    if spec.kind in {"rectangle", "polygon", "ellipse"}:
        regions = spec.max_regions or 1
        # nominal area with slack for smoothing and closing, plus a 2-px rim along each region for rasterising
        upper = min(upper, settings.area_slack * regions * spec.area[1] * total + regions * 2 * size)
    elif spec.kind == "foreground":
        upper = total
    return settings.min_area_px, max(settings.min_area_px, int(math.floor(upper)))


def region_cap(spec: ShapeSpec, settings: MaskSettings) -> int:
    """Most connected regions (8-connected) a finished mask of this generator may have."""
    if spec.max_regions is None:
        return settings.max_regions
    return max(1, min(spec.max_regions, settings.max_regions))


# ----------------------------------------------------------------------------------------------- drawing


def _scale(px: float, size: int, settings: MaskSettings) -> float:
    return px * size / settings.reference_size


def _draw_polygon(size: int, points: np.ndarray) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for y, x in points], fill=1)
    return np.asarray(canvas, dtype=bool)


def _box_sides(spec: ShapeSpec, size: int, rng: np.random.Generator) -> tuple[float, float]:
    """Long and short side of a region with the spec's area and aspect ratio."""
    area = rng.uniform(*spec.area) * size * size
    aspect = rng.uniform(*spec.aspect)
    long_side = math.sqrt(area / aspect)
    short_side = max(1.0, long_side * aspect)
    return min(long_side, size * rng.uniform(0.5, 1.0)), short_side


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _rectangle(spec: ShapeSpec, size: int, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    long_side, short_side = _box_sides(spec, size, rng)
    half = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]], dtype=np.float64) * [short_side / 2, long_side / 2]
    if rng.random() < 0.5:
        half = half[:, ::-1]
    return _draw_polygon(size, _rotate(half, rng.uniform(0, math.pi / 2)) + centre)


def _polygon(spec: ShapeSpec, size: int, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    long_side, short_side = _box_sides(spec, size, rng)
    vertices = int(rng.integers(10, 21))
    angles = np.sort(rng.uniform(0, 2 * math.pi, vertices))
    radii = rng.uniform(0.55, 1.0, vertices)
    # semi-axes chosen so the mean polygon area is close to the region area
    scale = 1.0 / math.sqrt(math.pi * float(np.mean(radii**2)) / 4)
    points = (
        np.stack([np.sin(angles) * radii * short_side / 2, np.cos(angles) * radii * long_side / 2], 1) * scale
    )
    return _draw_polygon(size, _rotate(points, rng.uniform(0, math.pi)) + centre)


def _ellipse_points(semi_long: float, semi_short: float, angle: float, centre: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    return _rotate(np.stack([np.sin(t) * semi_short, np.cos(t) * semi_long], 1), angle) + centre


def _ellipse(
    spec: ShapeSpec, size: int, centre: np.ndarray, rng: np.random.Generator, settings: MaskSettings
) -> np.ndarray:
    area = rng.uniform(*spec.area) * size * size
    aspect = rng.uniform(*spec.aspect)
    semi_long = math.sqrt(area / (math.pi * aspect))
    semi_short = max(0.75, semi_long * aspect)
    angle = rng.uniform(0, math.pi)
    outer = _draw_polygon(size, _ellipse_points(semi_long, semi_short, angle, centre))
    if spec.thickness is None:
        return outer
    ring = max(1.0, _scale(rng.uniform(*spec.thickness), size, settings))
    if semi_short - ring < 0.75:
        return outer
    inner = _draw_polygon(size, _ellipse_points(semi_long - ring, semi_short - ring, angle, centre))
    return outer & ~inner


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    size: int, resolution: tuple[int, int], angle: float, rng: np.random.Generator
) -> np.ndarray:
    """Gradient (Perlin) noise on a ``size``² grid, ``resolution`` lattice cells a side, turned by ``angle``.

    Values lie roughly in [-1, 1]. The rotation is applied to the sampling coordinates (no resampling).
    Smooth (coarse-lattice) noise is evaluated every few pixels and interpolated bilinearly (looks the same).
    """
    step = int(max(1, min(4, size // (8 * max(resolution)))))
    samples = size if step == 1 else (size - 1) // step + 2
    coords = (np.arange(samples, dtype=np.float32) * step) - (size - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    u = (cos * coords[None, :] - sin * coords[:, None]) * (resolution[1] / size)
    v = (sin * coords[None, :] + cos * coords[:, None]) * (resolution[0] / size)
    u -= u.min()
    v -= v.min()
    i0, j0 = np.floor(v).astype(np.int32), np.floor(u).astype(np.int32)
    fv, fu = v - i0, u - j0
    theta = rng.uniform(0, 2 * math.pi, (int(i0.max()) + 2, int(j0.max()) + 2)).astype(np.float32)
    grad_u, grad_v = np.cos(theta), np.sin(theta)

    def corner(di: int, dj: int) -> np.ndarray:
        return grad_u[i0 + di, j0 + dj] * (fu - dj) + grad_v[i0 + di, j0 + dj] * (fv - di)

    tu, tv = _fade(fu), _fade(fv)
    top = corner(0, 0) + tu * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + tu * (corner(1, 1) - corner(1, 0))
    noise = math.sqrt(2) * (top + tv * (bottom - top))
    if step > 1:
        noise = _upsample(noise, step, size)
    return noise


def _upsample(grid: np.ndarray, step: int, size: int) -> np.ndarray:
    """Bilinear interpolation of values sampled every ``step`` pixels back onto a ``size``² grid."""
    position = np.arange(size, dtype=np.float32) / step
    index = np.minimum(position.astype(np.int32), grid.shape[0] - 2)
    frac = position - index
    rows = grid[index] * (1 - frac)[:, None] + grid[index + 1] * frac[:, None]
    return rows[:, index] * (1 - frac)[None, :] + rows[:, index + 1] * frac[None, :]


def _perlin(spec: ShapeSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    low, high = spec.perlin_scales
    resolution = (2 ** int(rng.integers(low, high + 1)), 2 ** int(rng.integers(low, high + 1)))
    return perlin_noise(size, resolution, rng.uniform(-math.pi / 2, math.pi / 2), rng) > spec.perlin_threshold


def _brush(
    spec: ShapeSpec, size: int, centres: list[np.ndarray], rng: np.random.Generator, settings: MaskSettings
) -> np.ndarray:
    """Random brush strokes (a zig-zag polyline with round joints), one per centre."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    mean_angle, angle_range = 2 * math.pi / 5, 2 * math.pi / 15
    radius = math.sqrt(2 * size * size) / 8
    for centre in centres:
        vertices = int(rng.integers(spec.brush_vertices[0], spec.brush_vertices[1] + 1))
        low = mean_angle - rng.uniform(0, angle_range)
        high = mean_angle + rng.uniform(0, angle_range)
        width = max(1, int(round(_scale(rng.uniform(*spec.brush_width), size, settings))))
        points = [(float(centre[1]), float(centre[0]))]
        base = rng.uniform(0, 2 * math.pi)  # zig-zag about a random direction, as UniADC's strokes about x
        for index in range(vertices):
            turn = rng.uniform(low, high)
            heading = base + (turn if index % 2 else -turn)
            step = float(np.clip(rng.normal(radius, radius / 2), 0, 2 * radius))
            x = float(np.clip(points[-1][0] + step * math.cos(heading), 0, size - 1))
            y = float(np.clip(points[-1][1] + step * math.sin(heading), 0, size - 1))
            points.append((x, y))
        draw.line(points, fill=1, width=width)
        for x, y in points:
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=1)
    return np.asarray(canvas, dtype=bool)


def _smooth(mask: np.ndarray, kernel_px: float) -> np.ndarray:
    """Rounds corners: blur with a Gaussian of that kernel size and threshold at one half."""
    if kernel_px < 3 or not mask.any():
        return mask
    sigma = 0.3 * ((kernel_px - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a given kernel size
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma) >= 0.5


def close_mask(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Morphological closing with a ``kernel``×``kernel`` square; the image border does not erode the mask.

    Works on the mask's bounding box (grown by twice the kernel): closing never reaches further.
    """
    if kernel < 2 or not mask.any():
        return mask
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    height, width = mask.shape
    box = (
        slice(max(0, rows[0] - 2 * kernel), min(height, rows[-1] + 2 * kernel + 1)),
        slice(max(0, cols[0] - 2 * kernel), min(width, cols[-1] + 2 * kernel + 1)),
    )
    padded = np.pad(mask[box], kernel, mode="edge")
    closed = ndimage.binary_closing(padded, np.ones((kernel, kernel), dtype=bool))
    out = mask.copy()
    out[box] = closed[kernel:-kernel, kernel:-kernel]
    return out


def keep_largest_regions(mask: np.ndarray, count: int) -> np.ndarray:
    """Keeps the ``count`` largest 8-connected regions of a boolean mask."""
    labels, found = ndimage.label(mask, EIGHT_CONNECTED)
    if found <= count:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(-sizes, kind="stable")[:count] + 1
    return np.isin(labels, keep)


def count_regions(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, EIGHT_CONNECTED)[1])


# -------------------------------------------------------------------------------------------- generation


def sample_centre(geometry: ForegroundGeometry, placement: str, rng: np.random.Generator) -> np.ndarray:
    """A (row, col) centre: any foreground pixel (``anywhere``) or a pixel on its outline (``edge``)."""
    if placement == "edge":
        points = geometry.boundary_points
    elif placement == "anywhere":
        points = geometry.points
    else:
        raise ValueError(f"unknown placement {placement!r}; use anywhere or edge")
    return points[int(rng.integers(len(points)))].astype(np.float64)


def _raw_shape(
    name: str,
    spec: ShapeSpec,
    geometry: ForegroundGeometry,
    placement: str,
    rng: np.random.Generator,
    settings: MaskSettings,
) -> np.ndarray:
    size = geometry.mask.shape[0]
    if spec.kind == "foreground":
        return geometry.mask.copy()
    if spec.kind == "perlin":
        shape = _perlin(spec, size, rng)
        if placement == "edge":  # keep the blobs that reach the outline, within a band along it
            shape &= geometry.distance_to_boundary <= settings.edge_band * size
            labels, _ = ndimage.label(shape & geometry.mask, EIGHT_CONNECTED)
            touching = np.unique(labels[geometry.boundary & (labels > 0)])
            shape = np.isin(labels, touching[touching > 0])
        return shape
    if spec.kind == "brush":
        strokes = int(rng.integers(1, spec.brush_strokes + 1))
        return _brush(
            spec, size, [sample_centre(geometry, placement, rng) for _ in range(strokes)], rng, settings
        )
    regions = int(rng.integers(1, (spec.max_regions or 1) + 1))
    shape = np.zeros((size, size), dtype=bool)
    for _ in range(regions):
        centre = sample_centre(geometry, placement, rng)
        if spec.kind == "rectangle":
            region = _rectangle(spec, size, centre, rng)
        elif spec.kind == "polygon":
            region = _polygon(spec, size, centre, rng)
        elif spec.kind == "ellipse":
            region = _ellipse(spec, size, centre, rng, settings)
        else:
            raise ValueError(f"generator {name!r} has unknown kind {spec.kind!r}")
        shape |= _smooth(region, _scale(spec.smoothing, size, settings))
    return shape


def finish_mask(
    shape: np.ndarray, geometry: ForegroundGeometry, spec: ShapeSpec, settings: MaskSettings
) -> np.ndarray:
    """Foreground multiply, closing, foreground multiply again, region cap."""
    size = shape.shape[0]
    mask = shape & geometry.mask
    kernel = max(1, int(round(_scale(settings.closing_kernel, size, settings))))
    mask = close_mask(mask, kernel) & geometry.mask
    return keep_largest_regions(mask, region_cap(spec, settings))


def generate_mask(
    name: str,
    geometry: ForegroundGeometry,
    rng: np.random.Generator,
    placement: str = "anywhere",
    settings: MaskSettings | None = None,
    library: dict[str, ShapeSpec] | None = None,
) -> np.ndarray:
    """One boolean mask from generator ``name``, inside the foreground and within its size limits.

    Draws again (up to ``settings.max_tries``) while the mask is too small, covers too little of the
    foreground (UniADC's overlap threshold) or is too large; then falls back to a small foreground disc.
    """
    settings = settings or MaskSettings()
    library = GAP_LIBRARY if library is None else library
    if name not in library:
        raise KeyError(f"unknown mask generator {name!r}; known: {sorted(library)}")
    spec = library[name]
    size = geometry.mask.shape[0]
    low, high = area_limits(spec, size, settings)
    low = max(low, int(math.ceil(spec.min_coverage * geometry.area * 0.999)))
    for _ in range(settings.max_tries):
        shape = _raw_shape(name, spec, geometry, placement, rng, settings)
        if np.count_nonzero(shape & geometry.mask) < low // 2:  # cheap early rejection; closing adds little
            continue
        mask = finish_mask(shape, geometry, spec, settings)
        area = int(mask.sum())
        if low <= area <= high:
            return mask
    return _fallback_disc(geometry, placement, rng, max(low, settings.min_area_px), high)


def _fallback_disc(
    geometry: ForegroundGeometry, placement: str, rng: np.random.Generator, low: int, high: int
) -> np.ndarray:
    """A disc grown until it holds ``low`` foreground pixels (at most ``high``)."""
    centre = sample_centre(geometry, placement, rng)
    rows, cols = np.ogrid[: geometry.mask.shape[0], : geometry.mask.shape[1]]
    distance = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    inside = distance[geometry.mask]
    order = np.sort(inside)
    take = min(max(low, 1), high, len(order))
    radius2 = order[take - 1]
    mask = geometry.mask & (distance <= radius2)
    if mask.sum() > high:  # ties at the radius: keep the first `high` pixels in raster order
        flat = np.flatnonzero(mask)[high:]
        mask.ravel()[flat] = False
    return mask


@dataclass
class MaskPrior:
    """The mask prior of one defect type: eligible generators, placement and foreground use."""

    generators: list[str]
    placement: str = "anywhere"
    use_foreground: bool = True
    settings: MaskSettings = field(default_factory=MaskSettings)

    def sample(self, geometry: ForegroundGeometry, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """(boolean mask, generator name); a whole-image geometry stands in when the foreground is off."""
        if not self.use_foreground:
            geometry = whole_image_geometry(geometry.mask.shape[0])
        name = self.generators[int(rng.integers(len(self.generators)))]
        return generate_mask(name, geometry, rng, self.placement, self.settings), name


_WHOLE_CACHE: dict[int, ForegroundGeometry] = {}


def whole_image_geometry(size: int) -> ForegroundGeometry:
    """The geometry of an all-foreground ``size``² image (cached)."""
    if size not in _WHOLE_CACHE:
        _WHOLE_CACHE[size] = ForegroundGeometry.from_mask(np.ones((size, size), dtype=bool))
    return _WHOLE_CACHE[size]
