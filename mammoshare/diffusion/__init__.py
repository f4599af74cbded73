"""Diffusion generators of lesion patches on MONAI's diffusion classes (the ``ddpm_bcdr`` bundle)."""
