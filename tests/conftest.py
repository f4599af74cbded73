import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """The three phantom datasets, written once per test session: root/{inbreast,bcdr,cbis-ddsm}."""
    from mammoshare.phantom import write_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    write_phantoms(root, seed=2021)
    return root
