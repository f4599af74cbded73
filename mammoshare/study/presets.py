"""The study's experiment matrix and its two presets (``demo`` and ``paper``).

The matrix (the paper's Tables 1 and 2): augmentation row x training data fraction x task x
classifier x seed. A row names the synthetic sources whose patches are added (``wgangp``, ``dcgan``:
centre B's BCDR GANs, ``ddpm``: centre B's BCDR diffusion model, beyond the paper; ``optimam``:
centre C's medigan 00002 DCGAN) or the real BCDR lesions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Row",
    "ROWS",
    "ROW_KEYS",
    "TASKS",
    "TASK_TABLES",
    "CLASSIFIERS",
    "FRACTIONS",
    "GENERATORS",
    "GanSettings",
    "DiffusionSettings",
    "ClassifierSettings",
    "AuditSettings",
    "Preset",
    "PRESETS",
    "DEMO",
    "PAPER",
    "row_by_key",
    "fraction_label",
]


@dataclass(frozen=True)
class Row:
    """One augmentation row of the tables."""

    key: str
    label: str
    synthetic: tuple[str, ...] = ()  # generator keys, in the order the training set lists them
    real_bcdr: bool = False


ROWS: tuple[Row, ...] = (
    Row("none", "None"),
    Row("wgangp", "BCDR WGAN-GP", ("wgangp",)),
    Row("dcgan", "BCDR DCGAN", ("dcgan",)),
    Row("optimam", "OPTIMAM DCGAN", ("optimam",)),
    Row("both_a", "Both (a): WGAN-GP + OPTIMAM", ("wgangp", "optimam")),
    Row("both_b", "Both (b): DCGAN + OPTIMAM", ("dcgan", "optimam")),
    Row("real_bcdr", "Real BCDR", (), True),
    # beyond the paper: a diffusion model of centre B, alone and with OPTIMAM
    Row("ddpm", "BCDR DDPM", ("ddpm",)),
    Row("both_c", "Both (c): DDPM + OPTIMAM", ("ddpm", "optimam")),
)
ROW_KEYS = tuple(r.key for r in ROWS)

#: task -> (table file stem, title)
TASKS = ("all", "mass")
TASK_TABLES = {
    "all": ("table1_all_lesions", "Table 1: healthy vs lesion patches, all lesion types"),
    "mass": ("table2_masses", "Table 2: healthy vs lesion patches, masses only"),
}
#: classifier key -> label
CLASSIFIERS = {"cnn": "CNN", "swin": "Swin-T"}
#: training data fractions of centre A (the classifier bundle's ``train_fraction``)
FRACTIONS = (1.0, 0.5)
#: generator key -> (centre, bundle folder name, label)
GENERATORS = {
    "wgangp": ("B", "wgangp_bcdr", "BCDR WGAN-GP"),
    "dcgan": ("B", "dcgan_bcdr", "BCDR DCGAN"),
    "optimam": ("C", "dcgan_optimam", "OPTIMAM DCGAN (medigan 00002)"),
    "ddpm": ("B", "ddpm_bcdr", "BCDR DDPM"),
}


def row_by_key(key: str) -> Row:
    """A row by key; accepts the labels' spellings too (``Both(a)``, ``real-bcdr``, ``WGAN-GP``)."""
    norm = key.strip().lower().replace("-", "_").replace(" ", "_").replace("(", "_").replace(")", "")
    norm = norm.strip("_")
    aliases = {
        "bcdr_wgan_gp": "wgangp", "wgan_gp": "wgangp", "bcdr_wgangp": "wgangp",
        "bcdr_dcgan": "dcgan", "optimam_dcgan": "optimam",
        "both__a": "both_a", "botha": "both_a", "both__b": "both_b", "bothb": "both_b",
        "both__c": "both_c", "bothc": "both_c", "bcdr_ddpm": "ddpm", "diffusion": "ddpm",
        "real": "real_bcdr", "realbcdr": "real_bcdr", "real_bcdr": "real_bcdr",
    }
    norm = aliases.get(norm, norm)
    for row in ROWS:
        if row.key == norm:
            return row
    raise ValueError(f"unknown augmentation row {key!r}; use one of {list(ROW_KEYS)}")


def fraction_label(fraction: float) -> str:
    return f"{fraction * 100:g}%"


@dataclass(frozen=True)
class GanSettings:
    """Training settings of one GAN bundle (overrides of its ``train.json``)."""

    max_epochs: dict[str, int]  # per task
    ngf: int = 64
    ndf: int = 64
    batch_size: int = 16
    snapshot_start: int = 500
    snapshot_every: int = 50
    preview_every: int = 50

    def train_overrides(self, task: str) -> dict[str, Any]:
        """The overrides of the bundle's ``train.json`` for ``task``."""
        return {**asdict(self), "max_epochs": self.max_epochs[task]}

    def sampling_network(self) -> dict[str, Any]:
        """The overrides of the bundle's ``inference.json`` that rebuild the trained network."""
        return {"ngf": self.ngf, "latent_size": 100}

    def describe(self) -> str:
        return (f"epochs {self.max_epochs}, ngf {self.ngf}, ndf {self.ndf}, batch {self.batch_size}, snapshots from epoch "
                f"{self.snapshot_start} every {self.snapshot_every}")


@dataclass(frozen=True)
class DiffusionSettings:
    """Training and sampling settings of the diffusion bundle (``ddpm_bcdr``): overrides of its
    ``train.json`` and ``inference.json`` (the UNet's geometry must be the same in both)."""

    max_epochs: dict[str, int]  # per task
    batch_size: int = 8
    channels: tuple[int, ...] = (64, 128, 128)
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_head_channels: int = 128
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    num_inference_steps: int = 50  # DDIM steps when sampling
    preview_every: int = 5
    preview_steps: int = 50
    preview_per_class: int = 8

    def _network(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "attention_levels": list(self.attention_levels),
                "num_head_channels": self.num_head_channels, "norm_num_groups": self.norm_num_groups,
                "num_train_timesteps": self.num_train_timesteps}

    def train_overrides(self, task: str) -> dict[str, Any]:
        return {**self._network(), "max_epochs": self.max_epochs[task], "batch_size": self.batch_size,
                "preview_every": self.preview_every, "preview_steps": self.preview_steps,
                "preview_per_class": self.preview_per_class}

    def sampling_network(self) -> dict[str, Any]:
        return {**self._network(), "num_inference_steps": self.num_inference_steps}

    def describe(self) -> str:
        return (f"epochs {self.max_epochs}, UNet channels {list(self.channels)}, batch {self.batch_size}, "
                f"{self.num_train_timesteps} DDPM steps, sampled with DDIM-{self.num_inference_steps}")


@dataclass(frozen=True)
class ClassifierSettings:
    """Training settings of one classifier (overrides of the classifier bundle's ``train.json``)."""

    max_epochs: int = 100
    epoch_length: int | None = None
    batch_size: int = 12


@dataclass(frozen=True)
class AuditSettings:
    """The privacy and quality audit (``mammoshare audit``) of every generator the study trains.

    Train set: the lesion patches the GAN trained on (centre B, the preset's ``gan_subsets``).
    Holdout: centre A's lesion patches of the same task (every subset); centre B has no unseen
    patients left, since its GANs train on all of them."""

    num_samples: int = 2000
    features: str = "encoder"  # "encoder" or "pixel"
    msssim_pairs: int = 500
    encoder_steps: int | None = None  # None: the audit's default


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    #: phantom data for centres A and B when no dataset is given (demo only)
    phantom_default: bool
    seeds: int
    gans: dict[str, GanSettings | DiffusionSettings]  # the generators centre B trains
    classifiers: dict[str, ClassifierSettings]
    #: synthetic lesion patches added per cell, in equal shares per source (the paper: 1200)
    synthetic_count: int = 1200
    #: real BCDR lesion patches added per task (the paper: 1148 all lesions, 500 masses)
    real_lesion_count: dict[str, int] = field(default_factory=lambda: {"all": 1148, "mass": 500})
    n_bootstrap: int = 1000
    #: seed of the patient split and healthy boxes (datalists), of GAN training, of the synthetic sets
    data_seed: int = 2021
    gan_seed: int = 2021
    synthetic_seed: int = 0
    #: keep each cell's best classifier weights (model.pt); model_final.pt is always removed
    keep_classifier_weights: bool = True
    #: a demo OPTIMAM-layout generator is built when no --optimam-generator is given (demo only)
    demo_optimam: bool = False
    #: INbreast calcifications: one patch per ROI (the paper's count) or per 5 mm cluster
    calcifications: str = "roi"
    #: the DICOM VOI LUT / window: None = each dataset's default (raw values, as the study)
    apply_voi: bool | None = None
    #: the subsets of centre B's datalist that its GANs train on: all (centre B tests no classifier)
    gan_subsets: tuple[str, ...] = ("training", "validation", "test")
    #: the audit of every generator the study trains (None: no audit)
    audit: AuditSettings | None = field(default_factory=AuditSettings)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PAPER = Preset(
    name="paper",
    description="the paper's settings: GANs 3000 (DCGAN) / 10000 masses, 2700 all lesions (WGAN-GP) epochs, "
    "the DDPM beyond the paper (75 epochs, DDIM-50), "
    "1200 synthetic patches, 1148/500 real BCDR lesions, 100 classifier epochs, 3 seeds, 1000 bootstrap resamples, audits of 2000 samples per generator (self-supervised encoder features)",
    phantom_default=False,
    seeds=3,
    gans={
        "dcgan": GanSettings(max_epochs={"all": 3000, "mass": 3000}),
        # the study samples WGAN-GP's last weights: snapshots every 1000th epoch only, for inspection
        "wgangp": GanSettings(max_epochs={"all": 2700, "mass": 10000}, snapshot_every=1000),
        # beyond the paper: the bundle's defaults (MONAI's mednist_ddpm), the EMA weights sampled with DDIM-50
        "ddpm": DiffusionSettings(max_epochs={"all": 75, "mass": 75}),
    },
    classifiers={"cnn": ClassifierSettings(100), "swin": ClassifierSettings(100)},
)

DEMO = Preset(
    name="demo",
    description="a smoke run of the whole matrix on phantom data: tiny GANs (ngf = ndf = 8, 6 epochs), a tiny DDPM "
    "(UNet channels 8, 20 steps, 2 epochs, DDIM-2 sampling), 40 "
    "synthetic patches, CNN 2 epochs of at most 8 batches, Swin-T 1 epoch of 1 batch of 4, 1 seed (--seeds 2 shows the spread), 100 bootstrap "
    "resamples; audits of 64 samples per generator in pixel features",
    phantom_default=True,
    # one seed: 72 classifier cells keep the demo under 15 minutes on 2 CPU cores
    seeds=1,
    gans={
        "dcgan": GanSettings(max_epochs={"all": 6, "mass": 6}, ngf=8, ndf=8, batch_size=8, snapshot_start=4,
                             snapshot_every=1, preview_every=6),
        "wgangp": GanSettings(max_epochs={"all": 6, "mass": 6}, ngf=8, ndf=8, batch_size=8, snapshot_start=4,
                              snapshot_every=1, preview_every=6),
        "ddpm": DiffusionSettings(max_epochs={"all": 2, "mass": 2}, batch_size=16, channels=(8, 8, 8, 8),
                                  attention_levels=(False, False, False, False), num_head_channels=8, norm_num_groups=8,
                                  num_train_timesteps=20, num_inference_steps=2, preview_every=2, preview_steps=2,
                                  preview_per_class=2),
    },
    # epochs of a fixed length: the time per cell does not grow with the training set (one patch per
    # calcification ROI makes the all-lesion set about three times larger than per cluster)
    classifiers={"cnn": ClassifierSettings(max_epochs=2, epoch_length=8),
                 "swin": ClassifierSettings(max_epochs=1, epoch_length=1, batch_size=4)},
    synthetic_count=40,
    real_lesion_count={"all": 40, "mass": 20},
    n_bootstrap=100,
    keep_classifier_weights=False,
    demo_optimam=True,
    # the audit's smoke run: few samples and the PCA pixel features (no encoder to train)
    audit=AuditSettings(num_samples=64, features="pixel", msssim_pairs=60),
)

PRESETS = {"demo": DEMO, "paper": PAPER}
