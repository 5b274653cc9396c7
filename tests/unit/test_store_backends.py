"""The store registry: a URL's scheme picks the backend; a scheme nobody knows, or one whose driver is not
installed, is a ConfigurationError that says what to do (not a traceback at start-up)."""
import pytest

from greenjobs.pool import store
from greenjobs.pool.errors import ConfigurationError


def test_an_unknown_scheme_names_the_known_ones():
    with pytest.raises(ConfigurationError, match="known: sqlite://"):
        store.store_for("mysql://db/x")


def test_a_backend_whose_driver_is_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(store.BACKENDS, "fakedb", "greenjobs_no_such_driver_xyz:Store")
    with pytest.raises(ConfigurationError, match=r"not installed: pip install 'greenjobs\[postgres\]'"):
        store.store_for("fakedb://u:secret@h/db")
