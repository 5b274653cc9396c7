"""A minimal Django project that submits greenjobs jobs from a post_save receiver.

GREENJOBS_URL comes from the environment (the test that runs this project starts a real server).
"""
import os

SECRET_KEY = "greenjobs-client-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["orders"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# greenjobs_client.django reads this
GREENJOBS = {"URL": os.environ.get("GREENJOBS_URL", "http://127.0.0.1:6543"), "TIMEOUT": 10}
