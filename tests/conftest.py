import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# parallel workers (pytest-xdist) share the cores: each worker, and the bundle runs it starts, takes
# its share of threads instead of all of them (set before torch is imported)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


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


#: the longest test files, started first so that the parallel workers (pytest-xdist) end together
LONGEST_FIRST = ("test_readme.py", "test_study.py", "test_multi_gpu.py", "test_classifier_bundle.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file stays
