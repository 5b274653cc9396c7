import sys
import types

import pytest

from greenjobs.handlers.registry import Registry, handler
from greenjobs.pool.errors import ConfigurationError, HandlerNotFound


def module_with(name, **functions):
    module = types.ModuleType(name)
    module.__dict__.update(functions)
    sys.modules[name] = module
    return name


def test_builtins_are_registered_by_their_public_names():
    registry = Registry().load(["greenjobs.handlers.builtin"])
    assert set(registry.names()) >= {"echo", "sleep", "http.get", "fail", "flaky", "cpu.pbkdf2", "cpu.spin"}
    assert registry.get("cpu.pbkdf2").kind == "cpu"
    assert registry.get("sleep").kind == "io"


def test_decorator_has_no_side_effect_until_loaded():
    @handler("lonely")
    def lonely():
        return 1
    assert "lonely" not in Registry()
    assert lonely() == 1


def test_two_handlers_with_one_name_is_a_startup_error_naming_both():
    @handler("dup")
    def first():
        pass

    @handler("dup")
    def second():
        pass
    registry = Registry().load([module_with("gj_test_dup_a", first=first)])
    with pytest.raises(ConfigurationError, match=r"two handlers are named 'dup': .*test_registry.py:\d+ and .*"):
        registry.load([module_with("gj_test_dup_b", second=second)])


def test_unknown_handler_lists_the_known_ones():
    registry = Registry().load(["greenjobs.handlers.builtin"])
    with pytest.raises(HandlerNotFound, match="unknown handler 'fetchurl'; known handlers: cpu.pbkdf2, "):
        registry.get("fetchurl")


def test_unimportable_module_is_a_clear_configuration_error():
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_module_xyz'"):
        Registry().load(["no_such_module_xyz"])


@pytest.mark.parametrize("bad", ["", "has space", "1starts_with_digit", "x" * 101])
def test_handler_names_are_validated(bad):
    with pytest.raises(ConfigurationError):
        handler(bad)


def test_kind_is_validated():
    with pytest.raises(ConfigurationError, match="kind must be 'io', 'cpu' or 'auto'"):
        handler("x", kind="gpu")


def test_non_strict_load_records_import_errors_and_keeps_the_rest():
    broken = module_with("gj_test_broken_mod")
    sys.modules.pop(broken)
    registry = Registry().load(["greenjobs.handlers.builtin", "gj_test_no_such_module_at_all"], strict=False)
    assert "echo" in registry
    assert "cannot import 'gj_test_no_such_module_at_all'" in registry.import_errors["gj_test_no_such_module_at_all"]


def test_a_subclass_of_a_mapped_error_keeps_its_familys_status():
    from greenjobs.pool import errors
    from greenjobs.server.problems import status_of

    class StoreFull(errors.StoreUnavailable):
        """e.g. a backend's own refinement"""

    assert status_of(StoreFull("disk full")) == (503, "Store unavailable")
    assert status_of(errors.InvalidIdempotencyKey("Idempotency-Key", "bad"))[0] == 422
    assert status_of(errors.GreenjobsError("unmapped"))[0] == 500
