"""Exchanging generator bundles between centres, as data only.

- :mod:`mammoshare.exchange.archive`: ``mammoshare pack`` / ``unpack`` / ``keygen``: deterministic
  zip archives of data only (safetensors weights, ``generator.json``, the pinned inference config,
  metadata, model card, licence), a SHA-256 manifest with an optional audit summary, and a
  signature; kill-safe writes.
- :mod:`mammoshare.exchange.verify`: ``mammoshare verify``: the receiver's checks of an archive (or
  an unpacked folder), without evaluating, importing or unpickling anything from it.
- :mod:`mammoshare.exchange.reader`: reading received archives with limits and name normalisation.
- :mod:`mammoshare.exchange.signing`: Ed25519 signatures in the OpenSSF model-signing format.
- :mod:`mammoshare.exchange.medigan_bridge`: medigan model packages imported as generator bundles.

Generator weights themselves (families, safetensors, the restricted pickle loader, the pinned
config template) live in :mod:`mammoshare.gan.weights`.
"""
