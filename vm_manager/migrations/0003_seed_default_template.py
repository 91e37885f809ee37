"""The ``default`` template applied to a new container's /app on first editor connect."""

from django.db import migrations

README = """# Welcome to your Pequeroku container

This folder (/app) is your workspace. It lives on the container's own disk and
survives restarts of the container.

- Open a terminal from the console tab: you get a shell in /app.
- Edit files in the editor; every open editor sees changes live.
- Ask the AI assistant to read, create or run things here.
"""

EDITORCONFIG = """root = true

[*]
charset = utf-8
end_of_line = lf
insert_final_newline = true
indent_style = space
indent_size = 4
trim_trailing_whitespace = true

[*.{js,ts,json,yml,yaml,html,css}]
indent_size = 2
"""


def seed_default_template(apps, schema_editor):
    FileTemplate = apps.get_model("vm_manager", "FileTemplate")
    FileTemplateItem = apps.get_model("vm_manager", "FileTemplateItem")
    db = schema_editor.connection.alias
    template, created = FileTemplate.objects.using(db).get_or_create(
        slug="default",
        defaults={
            "name": "Default workspace",
            "description": "Applied once to /app when a container is first opened.",
            "public": True,
        },
    )
    if created:
        FileTemplateItem.objects.using(db).bulk_create(
            [
                FileTemplateItem(template=template, path="README.md", content=README, order=0),
                FileTemplateItem(
                    template=template, path=".editorconfig", content=EDITORCONFIG, order=1
                ),
            ]
        )


class Migration(migrations.Migration):
    dependencies = [("vm_manager", "0002_seed_container_types")]

    operations = [migrations.RunPython(seed_default_template, migrations.RunPython.noop)]
