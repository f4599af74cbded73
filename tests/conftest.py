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


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): the
    tiny networks gain nothing from threads; on a busy 2-core machine they lose a lot."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cause_chain(error: BaseException) -> str:
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


@pytest.fixture
def cause_chain():
    """``cause_chain(error)``: the messages of an exception's whole chain, one a line (MONAI wraps
    the errors of config expressions, once per nested reference)."""
    return _cause_chain
