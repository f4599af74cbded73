import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny networks gain nothing from threads; on a busy 2-core machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
