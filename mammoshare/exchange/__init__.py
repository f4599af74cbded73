"""Exchanging generator bundles between centres, as data only; one module per job.

- :mod:`.layout`: the archive format (file names, the manifest) and the errors;
- :mod:`.policy`: what a shared bundle may hold: the config allow-list, metadata rules, payload
  sniffing, the patient-id scan;
- :mod:`.signing`: Ed25519 signatures in the OpenSSF model-signing format;
- :mod:`.reader`: reading received archives (or folders) with limits and name normalisation;
- :mod:`.pack`: ``mammoshare pack`` (with the audit gate); :mod:`.unpack`: ``mammoshare unpack``;
- :mod:`.verify`: ``mammoshare verify``: the receiver's checks, evaluating, importing and
  unpickling nothing;
- :mod:`.cli`: the command lines (``pack``, ``verify``, ``unpack``, ``keygen``, ``medigan-import``,
  ``medigan-export``);
- :mod:`.medigan`: medigan model packages imported as generator bundles, and exported.

Generator weights themselves (families, safetensors, the restricted pickle loader, layer lists,
the pinned config template) live in :mod:`mammoshare.gan.weights`.
"""
