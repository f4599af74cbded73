"""GAN training, weights and sampling shared by the generator bundles (dcgan_bcdr, wgangp_bcdr)."""
