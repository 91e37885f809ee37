"""The ``default`` template gains what the upstream Pequeroku IDE reads on every open.

Both upstream IDEs read ``/app/config.json`` for their Run button: a JSON object whose ``run``
(a non-empty string) is typed into the console when Run is pressed; the newer one also reads
``port`` (1-65535) to show a "browser" button that probes the app through a proxy endpoint this
backend does not have, so no ``port`` is set. The original IDE also opens ``/app/readme.txt``.
Existing items are kept; a template without these paths gets them, one edited by staff keeps
its own version.
"""

import json

from django.db import migrations

CONFIG_JSON = (
    json.dumps({"run": "echo 'Set what Run does in /app/config.json' && ls -la /app"}, indent=2)
    + "\n"
)

README_TXT = """Welcome to your Pequeroku container.

/app is your workspace: it lives on the container's own disk and survives restarts.

- The Run button types the "run" command of /app/config.json into the console;
  change it to start your program, e.g. {"run": "python3 main.py"}.
- Terminals open a shell in /app; the editor shows changes from every source live.
- The AI assistant can read, create and run things here.
"""

ITEMS = {"config.json": CONFIG_JSON, "readme.txt": README_TXT}


def add_ide_files(apps, schema_editor):
    FileTemplate = apps.get_model("vm_manager", "FileTemplate")
    FileTemplateItem = apps.get_model("vm_manager", "FileTemplateItem")
    db = schema_editor.connection.alias
    template = FileTemplate.objects.using(db).filter(slug="default").first()
    if template is None:
        return  # removed by staff: not brought back
    items = FileTemplateItem.objects.using(db).filter(template=template)
    existing = set(items.values_list("path", flat=True))
    order = max(items.values_list("order", flat=True), default=-1)
    new = []
    for path, content in ITEMS.items():
        if path not in existing:
            order += 1
            new.append(FileTemplateItem(template=template, path=path, content=content, order=order))
    FileTemplateItem.objects.using(db).bulk_create(new)


def remove_ide_files(apps, schema_editor):
    FileTemplateItem = apps.get_model("vm_manager", "FileTemplateItem")
    db = schema_editor.connection.alias
    for path, content in ITEMS.items():
        FileTemplateItem.objects.using(db).filter(
            template__slug="default", path=path, content=content
        ).delete()


class Migration(migrations.Migration):
    dependencies = [("vm_manager", "0004_container_reconcile_claim")]

    operations = [migrations.RunPython(add_ide_files, remove_ide_files)]
