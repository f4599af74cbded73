"""Exchanging generator bundles between centres.

- :mod:`mammoshare.exchange.archive`: ``mammoshare pack`` / ``unpack`` / ``keygen``: deterministic
  zip archives holding only an allow-list of files, a SHA-256 manifest and an optional Ed25519
  signature over it.
- :mod:`mammoshare.exchange.verify`: ``mammoshare verify``: the receiver's checks of an archive (or
  an unpacked folder), without running anything from it.
- :mod:`mammoshare.exchange.selfcontained`: the packed ``configs/inference.json``, runnable with
  MONAI and torch alone.
- :mod:`mammoshare.exchange.medigan_bridge`: medigan model packages imported as generator bundles.
"""
