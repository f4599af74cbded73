"""Networks of the study, re-exported from their modules (``from mammoshare.networks import X``
and the bundle configs' ``mammoshare.networks.X`` keep working):

- :mod:`mammoshare.networks.gan`: DCGAN generator, DCGAN discriminator / WGAN-GP critic.
- :mod:`mammoshare.networks.classifier`: patch CNN, Swin-T classifier.
"""

from .classifier import PatchCNN, SwinClassifier, patch_classifier
from .gan import (
    OPTIMAM_GENERATOR_MULTIPLIERS,
    PAPER_GENERATOR_MULTIPLIERS,
    DCGANDiscriminator,
    DCGANGenerator,
    generator_layers,
    init_dcgan_weights,
)

__all__ = [
    "DCGANGenerator",
    "DCGANDiscriminator",
    "PatchCNN",
    "SwinClassifier",
    "patch_classifier",
    "generator_layers",
    "init_dcgan_weights",
    "PAPER_GENERATOR_MULTIPLIERS",
    "OPTIMAM_GENERATOR_MULTIPLIERS",
]
