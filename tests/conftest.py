import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture
def repo_root():
    return ROOT


def shared_data_dir():
    """The real GLUE/SQuAD files beside the checkout (../shared/data), or None when absent."""
    path = os.path.join(os.path.dirname(ROOT), "shared", "data")
    return path if os.path.isdir(path) else None
