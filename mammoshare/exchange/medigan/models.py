"""The study's three published medigan mass generators: what the medigan hub publishes about
them (facts, not code), and the bridge's error."""

from __future__ import annotations

from dataclasses import dataclass, field

from mammoshare.gan.errors import WeightsError

__all__ = ["MediganPackageError", "MediganModel", "MEDIGAN_MODELS", "normalise_model_id", "OFFLINE_ENV", "IMAGE_SIZE",
           "STUDY_REFERENCE", "MEDIGAN_REFERENCE"]

#: set to 1 to forbid any network access of ``medigan-import --model-id`` (not even a probe)
OFFLINE_ENV = "MAMMOSHARE_OFFLINE"
IMAGE_SIZE = 128


class MediganPackageError(WeightsError):
    """A medigan package that cannot be imported, or a bundle that cannot be exported; names the file."""


@dataclass(frozen=True)
class MediganModel:
    """What the medigan hub publishes about one of the study's generators (facts, not code)."""

    model_id: str
    bundle_name: str
    gan_type: str
    authors: str
    dataset: str
    package_name: str
    weights_name: str
    latent_size: int
    ngf: int
    multipliers: tuple[int, ...]
    leaky_slope: float | None
    decoding: str
    licence: str
    package_link: str
    doi: tuple[str, ...]
    note: str
    references: tuple[str, ...] = field(default=())


MEDIGAN_REFERENCE = (
    "Osuala R et al. medigan: a Python library of pretrained generative models for medical image synthesis. "
    "J Med Imaging 10(6), 2023"
)


STUDY_REFERENCE = (
    "Szafranowska Z, Osuala R, Breier B, Kushibar K, Lekadir K, Diaz O. Sharing generative models instead of "
    "private data: a simulation study on mammography patch classification. Proc. SPIE 12286, 16th International "
    "Workshop on Breast Imaging (IWBI 2022). arXiv:2203.04961"
)


MEDIGAN_MODELS: dict[str, MediganModel] = {
    m.model_id: m
    for m in (
        MediganModel(
            model_id="00002_DCGAN_MMG_MASS_ROI",
            bundle_name="dcgan_optimam",
            gan_type="DCGAN",
            authors="Alyafi B, Diaz O, Marti R",
            dataset="OPTIMAM (OMI-DB), malignant masses",
            package_name="MALIGN_DCGAN",
            weights_name="malign_mass_gen",
            latent_size=200,
            ngf=45,
            multipliers=(10, 8, 4, 2, 1),
            leaky_slope=0.2,
            decoding="tanh",
            licence="MIT",
            package_link="https://zenodo.org/record/5548158/files/MALIGN_DCGAN.zip?download=1",
            doi=("10.5281/zenodo.5188557", "10.1117/12.2543506", "10.1117/12.2560473"),
            note="DCGAN trained on malignant mass regions of interest of the OPTIMAM mammography image database",
            references=(
                "Alyafi B, Diaz O, Marti R. DCGANs for realistic breast mass augmentation in x-ray mammography. "
                "Proc. SPIE 11314, Medical Imaging 2020: Computer-Aided Diagnosis",
            ),
        ),
        MediganModel(
            model_id="00005_DCGAN_MMG_MASS_ROI",
            bundle_name="dcgan_bcdr_medigan_00005",
            gan_type="DCGAN",
            authors="Szafranowska Z, Osuala R, Breier B, Kushibar K, Lekadir K, Diaz O",
            dataset="BCDR, mass patches",
            package_name="00005_DCGAN_MMG_MASS_ROI",
            weights_name="500.pt",
            latent_size=100,
            ngf=64,
            multipliers=(16, 8, 4, 2, 1),
            leaky_slope=None,
            decoding="clip01",
            licence="MIT",
            package_link="the package_link of 00005_DCGAN_MMG_MASS_ROI in the medigan hub's config/global.json (RichardObi/medigan)",
            doi=("10.48550/arXiv.2203.04961",),
            note="the study's BCDR DCGAN, weights of epoch 500",
        ),
        MediganModel(
            model_id="00006_WGANGP_MMG_MASS_ROI",
            bundle_name="wgangp_bcdr_medigan_00006",
            gan_type="WGAN-GP",
            authors="Szafranowska Z, Osuala R, Breier B, Kushibar K, Lekadir K, Diaz O",
            dataset="BCDR, mass patches",
            package_name="00006_WGANGP_MMG_MASS_ROI",
            weights_name="10000.pt",
            latent_size=100,
            ngf=64,
            multipliers=(16, 8, 4, 2, 1),
            leaky_slope=None,
            decoding="clip01",
            licence="MIT",
            package_link="the package_link of 00006_WGANGP_MMG_MASS_ROI in the medigan hub's config/global.json (RichardObi/medigan)",
            doi=("10.48550/arXiv.2203.04961",),
            note="the study's BCDR WGAN-GP, weights of epoch 10000",
        ),
    )
}


def normalise_model_id(model_id: str) -> str:
    """``"2"``, ``"00002"``, ``"00002_dcgan_mmg_mass_roi"`` -> ``"00002_DCGAN_MMG_MASS_ROI"``; only the
    study's three mass generators (00002, 00005, 00006) are supported."""
    text = str(model_id).strip()
    for known in MEDIGAN_MODELS:
        if text.upper() == known or (text.isdigit() and len(text) <= 5 and text.zfill(5) == known[:5]):
            return known
    raise MediganPackageError(
        f"unsupported medigan model id {model_id!r}; supported: {', '.join(MEDIGAN_MODELS)} (or 2, 5, 6)"
    )
