"""Every command test keeps its reference statistics and default classifiers in its own folder, never ~/.cache."""

import pytest


@pytest.fixture(autouse=True)
def own_cache(isolated_cache):
    return isolated_cache
