"""The sample project with the greenjobs outbox app (``greenjobs_client.django``) installed, for
tests/client/test_django_outbox.py.

OUTBOX_DB is the database shared by the test's processes and threads: a SQLite file path or a
postgresql:// URL; GREENJOBS_URL the server (it may be down on purpose).
"""
import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "greenjobs-client-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["greenjobs_client.django"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_db = os.environ["OUTBOX_DB"]
if _db.startswith("postgresql://"):
    _url = urlsplit(_db)
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _url.path.lstrip("/"),
                             "USER": unquote(_url.username or ""), "PASSWORD": unquote(_url.password or ""),
                             "HOST": _url.hostname or "", "PORT": _url.port or 5432}}
else:
    # many writer threads: wait for the lock instead of failing with "database is locked"
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _db, "OPTIONS": {"timeout": 30}}}

GREENJOBS = {"URL": os.environ.get("GREENJOBS_URL", "http://127.0.0.1:6543"), "TIMEOUT": 10,
             "OUTBOX_BACKOFF": 1.0, "OUTBOX_BACKOFF_MAX": 60.0}
