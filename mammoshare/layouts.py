"""The file layouts of the public datasets, spelt once: the readers (:mod:`mammoshare.readers`) read
them and the phantom writers (:mod:`mammoshare.phantom`) write them (folder and file names, CSV
columns, view codes)."""

from __future__ import annotations

import re

__all__ = [
    "INBREAST_CSV", "INBREAST_DICOM_DIR", "INBREAST_XML_DIR", "INBREAST_CSV_HEADER", "INBREAST_REQUIRED_COLUMNS",
    "BCDR_FOLDER", "bcdr_folder", "bcdr_csv_name", "BCDR_OUTLINE_COLUMNS", "BCDR_FLAG_COLUMNS", "BCDR_IMG_COLUMNS",
    "BCDR_VIEWS", "CBIS_DDSM_DICOM_FOLDER", "CBIS_DDSM_CASE_CSVS", "CBIS_DDSM_MASS_COLUMNS", "CBIS_DDSM_CALC_COLUMNS",
    "MIAS_INFO",
]

# --- INbreast: root/INbreast.csv (';'-separated), root/AllDICOMs/*.dcm, root/AllXML/<fileid>.xml
INBREAST_CSV = "INbreast.csv"
INBREAST_DICOM_DIR = "AllDICOMs"
INBREAST_XML_DIR = "AllXML"
INBREAST_CSV_HEADER = ("Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads")
#: the INbreast.csv columns the reader uses
INBREAST_REQUIRED_COLUMNS = ("Laterality", "View", "File Name", "ACR", "Bi-Rads")

# --- BCDR: BCDR-<code>_dataset/bcdr_<code>_outlines.csv and bcdr_<code>_img.csv (code D01, F01, DN01...)
#: a BCDR dataset folder's name; group 1 is the dataset code
BCDR_FOLDER = re.compile(r"^BCDR-([A-Za-z]+\d+)_dataset$", re.IGNORECASE)


def bcdr_folder(code: str) -> str:
    """Dataset code (``"D01"``) -> its folder name (``"BCDR-D01_dataset"``)."""
    return f"BCDR-{code}_dataset"


def bcdr_csv_name(code: str, kind: str) -> str:
    """Dataset code and CSV kind (``"outlines"`` or ``"img"``) -> ``bcdr_<code>_<kind>.csv``."""
    return f"bcdr_{code.lower()}_{kind}.csv"


BCDR_OUTLINE_COLUMNS = (
    "patient_id", "study_id", "series", "lesion_id", "segmentation_id", "image_view", "image_filename",
    "mammography_type", "lw_x_points", "lw_y_points", "mammography_nodule", "mammography_calcification",
    "mammography_microcalcification", "mammography_axillary_adenopathy", "mammography_architectural_distortion",
    "mammography_stroma_distortion", "age", "density", "classification",
)
#: the outline CSV's lesion-type flags (0/1)
BCDR_FLAG_COLUMNS = BCDR_OUTLINE_COLUMNS[10:16]
BCDR_IMG_COLUMNS = (
    "patient_id", "study_id", "series", "image_filename", "image_type_name", "image_type_id", "age", "density",
)
#: image_view code -> (laterality, view, name used in file names and image_type_name)
BCDR_VIEWS = {1: ("R", "CC", "RCC"), 2: ("L", "CC", "LCC"), 3: ("R", "MLO", "RO"), 4: ("L", "MLO", "LO")}

# --- CBIS-DDSM (TCIA): the case description CSVs beside the DICOM folder the NBIA Data Retriever writes
CBIS_DDSM_DICOM_FOLDER = "CBIS-DDSM"
#: (kind, official subset) -> case description CSV file name
CBIS_DDSM_CASE_CSVS = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calc", "train"): "calc_case_description_train_set.csv",
    ("calc", "test"): "calc_case_description_test_set.csv",
}
#: columns of the mass case description CSVs, in their order
CBIS_DDSM_MASS_COLUMNS = (
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
)
#: columns of the calcification case description CSVs ("breast density" with a space)
CBIS_DDSM_CALC_COLUMNS = (
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "calc type", "calc distribution", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
)

# --- mini-MIAS: Info.txt (a free-text header, then the table) beside mdbNNN.pgm
MIAS_INFO = "Info.txt"
