"""The distribution's package list (setup.cfg) names every package folder, under greenjobs.*."""
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_setup_cfg_lists_every_package_folder():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {"greenjobs", "greenjobs_client"}
    for folder in ("server", "handlers", "pool"):
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            found.add(".".join(("greenjobs",) + parts))
    found |= {".".join(i.parent.relative_to(ROOT).parts) for i in (ROOT / "greenjobs_client").rglob("__init__.py")}
    assert listed == found


def test_the_handler_authors_import():
    import greenjobs
    from greenjobs import Retry, current_job, handler
    assert callable(handler) and issubclass(Retry, Exception) and not current_job
    assert set(greenjobs.__all__) == {"Retry", "current_job", "handler"}
