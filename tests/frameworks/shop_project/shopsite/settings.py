"""A Django project whose greenjobs handlers use the ORM (tests/frameworks/test_django_handlers.py).

The database file is $GREENJOBS_SHOP_DB; TIME_ZONE is not the machine's, so a test can see that setting
Django up in greenjobs leaves the server's own clock alone."""
import os

SECRET_KEY = "greenjobs-handler-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Asia/Tokyo"
INSTALLED_APPS = ["shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["GREENJOBS_SHOP_DB"],
                         "OPTIONS": {"timeout": 30}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
