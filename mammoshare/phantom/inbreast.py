"""A small, deterministic INbreast phantom in the real INbreast layout.

Layout written under ``root`` (as in the INbreast release)::

    AllDICOMs/<fileid>_<patientid>_MG_<L|R>_<CC|MLO>_ANON.dcm
    AllXML/<fileid>.xml          OsiriX plist, one per annotated image
    INbreast.csv                 ';'-separated: Patient ID;Patient age;Laterality;View;
                                 Acquisition date;File Name;ACR;Bi-Rads
    PHANTOM_README.txt           says that the data is synthetic

About a third of the patients are healthy (every image BI-RADS 1, no XML). The others have
lesions on one side only (the other side, when imaged, is BI-RADS 1 without XML): masses (plain
ROIs named ``Mass``, spiculated ones ``Spiculated Region`` or ``Espiculated Region``),
calcification clusters (each calcification a 1-point ROI named ``Calcification``, sometimes with a
``Cluster`` ROI outlining the cluster) and distortions. One benign patient has a BI-RADS 2 image
without XML, as happens in the real data.

The phantom's pixels are 0.28 mm (real INbreast: 0.07 mm); the ``PixelSpacing`` tag says so. The
calcification clusters are drawn so that the ground truth is unambiguous for the reader's
single-linkage rule (:data:`mammoshare.readers.inbreast.cluster_distance_mm`): the points of one
cluster are linked well below that distance and different clusters lie well beyond it.

:func:`inbreast_phantom_truth` regenerates the ground truth (every image and its lesions as drawn)
without writing files, for tests.
"""

from __future__ import annotations

import plistlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..layouts import INBREAST_CSV, INBREAST_DICOM_DIR, INBREAST_XML_DIR
from ..layouts import INBREAST_CSV_HEADER as CSV_HEADER
from .dicom import write_mg_dicom
from .synth import PhantomImage, mark_phantom_root, synth_mammogram

__all__ = ["write_inbreast_phantom", "inbreast_phantom_truth", "INBREAST_PHANTOM_SPACING_MM", "CSV_HEADER"]

#: pixel spacing of the phantom images in mm (INbreast itself: 0.07 mm)
INBREAST_PHANTOM_SPACING_MM = 0.28
#: the INbreast reader's calcification link distance (``mammoshare.readers.inbreast.cluster_distance_mm``),
#: repeated here so that writing a phantom does not import the reader (and MONAI)
CLUSTER_LINK_MM = 5.0

# OsiriX ROI types: 15 = pencil (closed freehand contour), 19 = 2D point
_ROI_TYPE_CONTOUR = 15
_ROI_TYPE_POINT = 19


@dataclass
class _ImageSpec:
    file_id: str
    patient_id: str
    laterality: str
    view: str
    acr: int | None  # as written in the CSV (None = blank)
    density: int  # drawn texture density
    birads: str
    kinds: list[str]  # synth lesion kinds to draw
    write_xml: bool
    names: dict[str, str] = field(default_factory=dict)  # ROI name per lesion kind
    cluster_outline: bool = False
    photometric: str = "MONOCHROME2"
    compress: bool = False
    window: bool = False
    date: str = "201001"

    @property
    def dicom_name(self) -> str:
        return f"{self.file_id}_{self.patient_id}_MG_{self.laterality}_{self.view}_ANON.dcm"


def _plan(seed: int) -> list[_ImageSpec]:
    """Patients, images and what each image shows: cheap, no pixels."""
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    categories = ["healthy"] * 8 + ["mass"] * 12 + ["calc"] * 2 + ["benign"] + ["distortion"]
    categories = [categories[i] for i in rng.permutation(len(categories))]
    two_image = set(rng.choice(len(categories), size=5, replace=False).tolist())
    blank_acr = set(rng.choice(len(categories), size=3, replace=False).tolist())
    used_ids: set[str] = set()
    specs: list[_ImageSpec] = []
    mass_count = 0
    calc_count = 0
    for p, category in enumerate(categories):
        patient_id = "".join("0123456789abcdef"[v] for v in rng.randint(0, 16, size=16))
        density = int(rng.randint(1, 5))
        acr = None if p in blank_acr else density
        lesion_side = "L" if rng.rand() < 0.5 else "R"
        date = f"{rng.randint(2008, 2011)}{rng.randint(1, 13):02d}"
        sides = [lesion_side] if p in two_image else ["L", "R"]
        # what the lesion side shows
        kinds: list[str] = []
        names: dict[str, str] = {}
        birads = "1"
        outline = False
        if category == "mass":
            spiculated = mass_count % 2 == 1
            kinds = ["spiculated" if spiculated else "mass"]
            names["mass"] = "Mass"
            names["spiculated"] = "Espiculated Region" if mass_count == 3 else "Spiculated Region"
            if mass_count % 3 == 0:
                kinds.append("calcification")
                outline = mass_count % 2 == 0
            birads = ("3", "4a", "4b", "4c", "5", "6")[mass_count % 6]
            mass_count += 1
        elif category == "calc":
            kinds = ["calcification"] * (2 if calc_count == 0 else 1)
            outline = calc_count == 1
            birads = ("4a", "3")[calc_count % 2]
            calc_count += 1
        elif category == "benign":
            kinds = ["calcification"]
            birads = "2"
        elif category == "distortion":
            kinds = ["distortion"]
            birads = "4c"
        names.setdefault("calcification", "Calcification")
        names.setdefault("distortion", "Distortion")
        for side in sides:
            for view in ("CC", "MLO"):
                file_id = ""
                while not file_id or file_id in used_ids:
                    file_id = str(rng.randint(20_000_000, 54_000_000))
                used_ids.add(file_id)
                lesion = category != "healthy" and side == lesion_side
                image_kinds = list(kinds) if lesion else []
                image_birads = birads if lesion else "1"
                if lesion and category == "benign" and view == "MLO":
                    image_kinds = []  # BI-RADS 2 without annotation: no XML, as in the real data
                image_names = dict(names)
                if lesion and category == "calc" and calc_count == 2 and view == "CC":
                    image_names["calcification"] = "Calcifications"
                specs.append(
                    _ImageSpec(
                        file_id=file_id,
                        patient_id=patient_id,
                        laterality=side,
                        view=view,
                        acr=acr,
                        density=density,
                        birads=image_birads,
                        kinds=image_kinds,
                        write_xml=bool(image_kinds),
                        names=image_names,
                        cluster_outline=outline and bool(image_kinds),
                        date=date,
                    )
                )
    # pixel storage variants: several MONOCHROME1, a few JPEG 2000, a couple with a VOI window,
    # each on healthy and on lesion images
    healthy = [i for i, s in enumerate(specs) if not s.kinds]
    lesion = [i for i, s in enumerate(specs) if s.kinds]
    pick_h = [healthy[i] for i in rng.permutation(len(healthy))]
    pick_l = [lesion[i] for i in rng.permutation(len(lesion))]
    for i in pick_h[:3] + pick_l[:3]:
        specs[i].photometric = "MONOCHROME1"
    for i in pick_h[3:5] + pick_l[3:4]:
        specs[i].compress = True
    for i in pick_h[5:6] + pick_l[4:5]:
        specs[i].window = True
    return specs


def _image_rng(seed: int, file_id: str, attempt: int) -> np.random.RandomState:
    return np.random.RandomState(zlib.crc32(f"inbreast/{seed}/{file_id}/{attempt}".encode()) & 0xFFFFFFFF)


def _linked_groups(point_sets: list[np.ndarray], link_px: float) -> int:
    """Number of single-linkage groups of the point sets at ``link_px`` (small sets: plain numpy)."""
    parent = list(range(len(point_sets)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a in range(len(point_sets)):
        for b in range(a + 1, len(point_sets)):
            gaps = np.linalg.norm(point_sets[a][:, None, :] - point_sets[b][None, :, :], axis=-1)
            if gaps.min() <= link_px:
                parent[find(b)] = find(a)
    return len({find(i) for i in range(len(point_sets))})


def _clusters_unambiguous(image: PhantomImage, spacing_mm: float) -> bool:
    """True when each drawn calcification cluster is one cluster for the reader's single-linkage
    rule with a safety factor: its points linked at 0.8 x the distance, other clusters farther than
    1.5 x the distance."""
    clusters = [lesion.points for lesion in image.lesions if lesion.kind == "calcification"]
    link_px = CLUSTER_LINK_MM / spacing_mm
    for points in clusters:
        if _linked_groups([p[None] for p in points], 0.8 * link_px) != 1:
            return False
    return _linked_groups(clusters, 1.5 * link_px) == len(clusters)


def _inside(lesions: list[dict], shape: tuple[int, int]) -> bool:
    """True when every point of every lesion lies inside the image (synth_mammogram can place a
    lesion at the chest wall, partly outside the image)."""
    height, width = shape
    for lesion in lesions:
        x, y = lesion["points"][:, 0], lesion["points"][:, 1]
        if x.min() < 0 or y.min() < 0 or x.max() > width - 1 or y.max() > height - 1:
            return False
    return True


def _draw(spec: _ImageSpec, seed: int, spacing_mm: float) -> tuple[PhantomImage, list[dict]]:
    """The image and its lesions; redrawn (with the next attempt's seed) until the lesions lie
    inside the image and the calcification clusters are unambiguous."""
    for attempt in range(50):
        image = synth_mammogram(
            _image_rng(seed, spec.file_id, attempt), spec.laterality, spec.view, spec.density, spec.kinds
        )
        lesions = _lesions(spec, image)
        if _inside(lesions, image.pixels.shape) and _clusters_unambiguous(image, spacing_mm):
            return image, lesions
    raise RuntimeError(f"phantom image {spec.file_id}: no valid drawing of {spec.kinds} in 50 attempts")


def _outline(points: np.ndarray, grow: float = 3.0) -> np.ndarray:
    """A 'Cluster' ROI: the convex hull of the calcifications, grown by a few pixels."""
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centre = points.mean(axis=0)
    offset = hull - centre
    norm = np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-6)
    return hull + offset / norm * grow


def _roi_stats(pixels: np.ndarray, points: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """Area (pixels; 0 for points), mean, min, max, standard deviation and total of the ROI's pixels."""
    height, width = pixels.shape
    if len(points) <= 2:
        xs = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
        ys = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
        values = pixels[ys, xs].astype(np.float64)
        area = 0.0
    else:
        x0, y0 = np.floor(points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(points - [x0, y0]).astype(np.int32)], 1)
        values = pixels[y0:y1, x0:x1][mask > 0].astype(np.float64)
        x, y = points[:, 0], points[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if values.size == 0:
            values = np.zeros(1)
    return area, float(values.mean()), float(values.min()), float(values.max()), float(values.std()), float(values.sum())


def _roi(index: int, name: str, points: np.ndarray, pixels: np.ndarray, spacing_mm: float) -> dict:
    area_px, mean, vmin, vmax, dev, total = _roi_stats(pixels, points)
    centre = points.mean(axis=0) * spacing_mm
    return {
        "Area": area_px * spacing_mm**2 / 100.0,  # OsiriX reports cm^2
        "Center": f"({centre[0]:.6f}, {centre[1]:.6f}, 0.000000)",
        "Dev": dev,
        "IndexInImage": index,
        "Max": vmax,
        "Mean": mean,
        "Min": vmin,
        "Name": name,
        "NumberOfPoints": int(len(points)),
        "Point_mm": [f"({x * spacing_mm:.6f}, {y * spacing_mm:.6f}, 0.000000)" for x, y in points],
        "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points],
        "Total": total,
        "Type": _ROI_TYPE_POINT if len(points) <= 2 else _ROI_TYPE_CONTOUR,
    }


def _lesions(spec: _ImageSpec, image: PhantomImage) -> list[dict]:
    """The ground truth of one image: ``[{"type", "points", "rois": [(name, points), ...]}]``.

    ``points`` are every point the XML holds for the lesion, rounded as written (6 decimals)."""
    out = []
    for kind, lesion in zip(spec.kinds, image.lesions):
        if lesion.kind == "calcification":
            rois = [(spec.names["calcification"], p[None].copy()) for p in lesion.points]
            if spec.cluster_outline:
                rois.append(("Cluster", _outline(lesion.points)))
        else:
            rois = [(spec.names[kind], lesion.contour.copy())]
        rois = [(name, np.round(points, 6)) for name, points in rois]
        out.append({"type": lesion.kind, "points": np.concatenate([p for _, p in rois]), "rois": rois})
    return out


def _xml(spec: _ImageSpec, image: PhantomImage, lesions: list[dict], seed: int, spacing_mm: float) -> bytes:
    rois = [roi for lesion in lesions for roi in lesion["rois"]]
    if len(lesions) > 1:  # annotators do not write ROIs lesion by lesion: the reader must group them
        order = _image_rng(seed, spec.file_id, -1).permutation(len(rois))
        rois = [rois[i] for i in order]
    plist = {
        "Images": [
            {
                "ImageIndex": 0,
                "NumberOfROIs": len(rois),
                "ROIs": [_roi(i, name, points, image.pixels, spacing_mm) for i, (name, points) in enumerate(rois)],
            }
        ]
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=True)


def _generate(seed: int, spacing_mm: float):
    for spec in _plan(seed):
        image, lesions = _draw(spec, seed, spacing_mm)
        yield spec, image, lesions


def write_inbreast_phantom(root: str | Path, seed: int = 2021) -> Path:
    """Write the INbreast phantom under ``root`` (created if needed); returns ``root``.

    The same seed writes the same files, byte for byte.
    """
    root = Path(root)
    spacing = INBREAST_PHANTOM_SPACING_MM
    (root / INBREAST_DICOM_DIR).mkdir(parents=True, exist_ok=True)
    (root / INBREAST_XML_DIR).mkdir(parents=True, exist_ok=True)
    rows = [";".join(CSV_HEADER)]
    for spec, image, lesions in _generate(seed, spacing):
        window = None
        if spec.window:
            values = image.pixels[image.breast_mask]
            low, high = float(np.percentile(values, 1)), float(values.max())
            window = ((low + high) / 2.0, high - low + 1.0)
        write_mg_dicom(
            root / INBREAST_DICOM_DIR / spec.dicom_name,
            image.pixels,
            patient_id=spec.patient_id,
            laterality=spec.laterality,
            view=spec.view,
            photometric=spec.photometric,
            compress=spec.compress,
            pixel_spacing_mm=spacing,
            window=window,
        )
        if spec.write_xml:
            (root / INBREAST_XML_DIR / f"{spec.file_id}.xml").write_bytes(_xml(spec, image, lesions, seed, spacing))
        acr = "" if spec.acr is None else str(spec.acr)
        rows.append(";".join(["removed", "removed", spec.laterality, spec.view, spec.date, spec.file_id, acr, spec.birads]))
    (root / INBREAST_CSV).write_text("\n".join(rows) + "\n")
    mark_phantom_root(root, f"INbreast (AllDICOMs/, AllXML/, INbreast.csv), pixel spacing {spacing} mm (real INbreast: "
                      "0.07 mm)", __name__, seed)
    return root


def inbreast_phantom_truth(seed: int = 2021) -> list[dict]:
    """The phantom's ground truth, regenerated without writing files (as slow as drawing it).

    One dict per image, in CSV order: ``file_id``, ``patient_id``, ``dicom`` (name in
    ``AllDICOMs``), ``laterality``, ``view``, ``acr`` (None = blank), ``birads``, ``has_xml``,
    ``photometric``, ``compressed``, ``window``, ``shape`` (rows, columns), ``spacing_mm`` and
    ``lesions``: ``[{"type": "mass" | "calcification" | "distortion", "points": (N, 2) x, y,
    "rois": [(name, points), ...]}]`` (a calcification cluster: all its points and its outline).
    """
    truth = []
    spacing = INBREAST_PHANTOM_SPACING_MM
    for spec, image, lesions in _generate(seed, spacing):
        truth.append(
            {
                "file_id": spec.file_id,
                "patient_id": spec.patient_id,
                "dicom": spec.dicom_name,
                "laterality": spec.laterality,
                "view": spec.view,
                "acr": spec.acr,
                "birads": spec.birads,
                "has_xml": spec.write_xml,
                "photometric": spec.photometric,
                "compressed": spec.compress,
                "window": spec.window,
                "shape": tuple(image.pixels.shape),
                "spacing_mm": spacing,
                "lesions": lesions,
            }
        )
    return truth
