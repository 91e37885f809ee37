"""Existing names made to follow vm_manager/names.py: letters and digits of any script, space,
".", "_" and "-". Rows saved before the rule (container, template, team and type names) get
each other character replaced by "-"; a name that would then repeat one already in its scope
(a user's containers, an owner's teams, all templates, all types) gets "-2", "-3" ... A name
that was empty where one is required becomes "<kind>-<id>". Irreversible in content, so the
reverse step changes nothing.
"""

import re

from django.db import migrations

# A copy of names._DISPLAY_NAME: a migration must not change when the app's module does.
ALLOWED = re.compile(r"[\w .-]+")
DISALLOWED = re.compile(r"[^\w .-]")

# model, name field, fields that scope uniqueness, whether an empty name is allowed, kind
TARGETS = (
    ("ContainerType", "container_type_name", (), False, "type"),
    ("FileTemplate", "name", (), False, "template"),
    ("Team", "name", ("owner_id",), False, "team"),
    ("Container", "name", ("user_id",), True, "container"),
)


def conforming(name, blank_allowed):
    return (blank_allowed and name == "") or ALLOWED.fullmatch(name) is not None


def unique_in(taken, base, max_length):
    candidate, n = base, 2
    while candidate in taken:
        suffix = f"-{n}"
        candidate = base[: max_length - len(suffix)] + suffix
        n += 1
    return candidate


def constrain_names(apps, schema_editor):
    for model_name, field, scope, blank_allowed, kind in TARGETS:
        model = apps.get_model("vm_manager", model_name)
        max_length = model._meta.get_field(field).max_length
        rows = list(model.objects.order_by("pk").values_list("pk", field, *scope))
        taken = {}
        for pk, name, *key in rows:
            taken.setdefault(tuple(key), set()).add(name)
        for pk, name, *key in rows:
            if conforming(name, blank_allowed):
                continue
            base = DISALLOWED.sub("-", name) or f"{kind}-{pk}"
            new = unique_in(taken[tuple(key)], base[:max_length], max_length)
            taken[tuple(key)].add(new)
            model.objects.filter(pk=pk).update(**{field: new})


class Migration(migrations.Migration):
    dependencies = [
        ("vm_manager", "0006_node_placement_fields"),
    ]

    operations = [
        migrations.RunPython(constrain_names, migrations.RunPython.noop, elidable=True),
    ]
