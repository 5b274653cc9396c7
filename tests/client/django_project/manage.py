#!/usr/bin/env python
"""The sample Django project's manage.py: ``python manage.py test`` runs orders/tests.py."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gjsite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
