"""medigan model packages and the project's generator bundles, both ways, as data only.

- :mod:`.models`: the study's three published medigan mass generators (facts, not code);
- :mod:`.importer`: ``mammoshare medigan-import``: a package -> a generator bundle (the package's
  code is never run; its weights are read once by :mod:`mammoshare.gan.weights`' restricted loader);
- :mod:`.exporter`: ``mammoshare medigan-export``: a bundle -> a package medigan 1.0.0 runs;
- :mod:`.templates`: the files they write (the exported ``__init__.py`` is a real module).
"""
