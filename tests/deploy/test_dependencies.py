"""Every third-party package the project imports is declared in pyproject.toml, so a change in
some other package's dependencies cannot stop the server from importing."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.support.host import REPO

PACKAGES = ("pequeroku", "vm_manager", "internal_config", "ai_services", "node_agent")

# Imported directly but guaranteed by a declared package for good: the package's own API
# depends on it (Django's sync/async adapters, FastAPI's request and model types ...).
PROVIDED_BY = {
    "asgiref": "django",
    "starlette": "fastapi",
    "pydantic": "fastapi",
    "certifi": "httpx",
    "cryptography": "channels-redis",  # the [cryptography] extra
    "psycopg_pool": "psycopg",  # the [pool] extra
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        normalized(re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0]) for dep in project["dependencies"]
    }


def imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - set(PACKAGES)


def test_every_imported_third_party_package_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    undeclared = set()
    for module in imported_top_level_modules() - set(PROVIDED_BY):
        names = {normalized(d) for d in distributions.get(module, [module])}
        if not names & declared():
            undeclared.add(module)

    assert undeclared == set()


def test_what_a_declared_package_provides_really_comes_with_it() -> None:
    for module, parent in PROVIDED_BY.items():
        requirements = importlib.metadata.requires(parent) or []
        names = {normalized(re.split(r"[\s\[<>=!~;(]", r, maxsplit=1)[0]) for r in requirements}

        assert normalized(module) in names, (module, parent)
        assert normalized(parent) in declared()
