import pytest
from django.db import IntegrityError

from vm_manager.models import FileTemplate, FileTemplateItem


@pytest.fixture
def template(db):
    return FileTemplate.objects.create(name="Python", slug="python")


def test_template_items_are_ordered_by_order_then_path(template):
    FileTemplateItem.objects.create(template=template, path="b.py", order=1)
    FileTemplateItem.objects.create(template=template, path="z.py", order=0)
    FileTemplateItem.objects.create(template=template, path="a.py", order=1)

    assert [item.path for item in template.items.all()] == ["z.py", "a.py", "b.py"]


def test_template_item_path_is_unique_per_template(template):
    FileTemplateItem.objects.create(template=template, path="main.py")

    with pytest.raises(IntegrityError):
        FileTemplateItem.objects.create(template=template, path="main.py")


def test_same_path_may_appear_in_two_templates(template):
    other = FileTemplate.objects.create(name="Other", slug="other")
    FileTemplateItem.objects.create(template=template, path="main.py")

    FileTemplateItem.objects.create(template=other, path="main.py")


def test_template_items_count(template):
    FileTemplateItem.objects.create(template=template, path="a")
    FileTemplateItem.objects.create(template=template, path="b")

    assert template.items_count == 2


def test_template_slug_is_unique(template):
    with pytest.raises(IntegrityError):
        FileTemplate.objects.create(name="Again", slug="python")


def test_default_template_is_seeded_with_a_readme_and_a_config_file(db):
    default = FileTemplate.objects.get(slug="default")

    assert [item.path for item in default.items.all()] == [
        "README.md",
        ".editorconfig",
        "config.json",
        "readme.txt",
    ]
