"""Joins the default template's IDE files (0005, from 0004) with the placement branch (0011)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("vm_manager", "0005_default_template_ide_files"),
        ("vm_manager", "0011_constrain_existing_names"),
    ]

    operations = []
