import os
import sys

# Tiny test models gain nothing from a second thread, and OpenMP threads that outnumber free
# cores (tests that spawn processes, a busy machine) slow element-wise kernels down many times.
# Set before torch is imported here or in any subprocess a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture
def repo_root():
    return ROOT


def shared_data_dir():
    """The real GLUE/SQuAD files beside the checkout (../shared/data), or None when absent."""
    path = os.path.join(os.path.dirname(ROOT), "shared", "data")
    return path if os.path.isdir(path) else None
