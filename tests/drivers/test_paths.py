import pytest

from vm_manager.drivers import PathNotAllowed
from vm_manager.guest.paths import relative_to_workspace, workspace_path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/app", "/app"),
        ("/app/", "/app"),
        ("src/main.py", "/app/src/main.py"),
        ("/app/src/../README.md", "/app/README.md"),
        ("//app//x", "/app/x"),
    ],
)
def test_workspace_paths_are_normalised_inside_app(given, expected):
    assert workspace_path(given) == expected


@pytest.mark.parametrize(
    "given", ["../etc/passwd", "/etc/passwd", "/app/../etc", "/application", "", "a\x00b"]
)
def test_paths_escaping_the_workspace_are_refused(given):
    with pytest.raises(PathNotAllowed):
        workspace_path(given)


def test_relative_to_workspace():
    assert relative_to_workspace("/app/a/b") == "a/b"
    assert relative_to_workspace("/app") == ""
