"""Names: the friendly random container names, and what a name people choose may contain.

Entry points: ``friendly_name()``, ``display_name_validator``, ``no_markup_validator``.

Names that one user chooses and others see (container names, template names, team and type
names) are limited to letters and digits of any script, space, ``.``, ``_`` and ``-``, which is
what the generated names use: nothing a browser could take for markup, an attribute or an
entity, however a client inserts them. Free text shown to others (template descriptions) may
not contain ``<`` or ``>``, so it can never open a tag.
"""

from __future__ import annotations

import re
import secrets

from django.core.exceptions import ValidationError

DISPLAY_NAME_CHARACTERS = "letters, digits, spaces, '.', '_' and '-'"
DISPLAY_NAME_HELP = f"Only {DISPLAY_NAME_CHARACTERS}."
NO_MARKUP_HELP = "May not contain '<' or '>'."

# \w: letters and digits of any script, and "_". Plain functions rather than RegexValidator:
# the OpenAPI schema would publish the pattern, and JSON Schema regexes read \w and \Z otherwise.
_DISPLAY_NAME = re.compile(r"[\w .-]+")


def display_name_validator(value: str) -> None:
    if not _DISPLAY_NAME.fullmatch(value):
        raise ValidationError(
            f"Names may contain only {DISPLAY_NAME_CHARACTERS}.", code="invalid_name"
        )


def no_markup_validator(value: str) -> None:
    if "<" in value or ">" in value:
        raise ValidationError("This text may not contain '<' or '>'.", code="markup")


ADJECTIVES = (
    "amber",
    "brave",
    "calm",
    "clever",
    "cosmic",
    "crisp",
    "daring",
    "eager",
    "fancy",
    "gentle",
    "happy",
    "humble",
    "jolly",
    "keen",
    "lively",
    "lucky",
    "mellow",
    "nimble",
    "plucky",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "rustic",
    "shiny",
    "silent",
    "snowy",
    "solar",
    "steady",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "zesty",
)
NOUNS = (
    "badger",
    "beacon",
    "canyon",
    "comet",
    "condor",
    "coral",
    "falcon",
    "fjord",
    "gecko",
    "glacier",
    "harbor",
    "heron",
    "island",
    "jaguar",
    "lagoon",
    "lynx",
    "meadow",
    "nebula",
    "otter",
    "panda",
    "pebble",
    "pine",
    "puma",
    "quartz",
    "raven",
    "river",
    "sparrow",
    "summit",
    "tiger",
    "tundra",
    "valley",
    "walrus",
    "willow",
    "yak",
    "zebra",
)


def friendly_name() -> str:
    return f"{secrets.choice(ADJECTIVES)}-{secrets.choice(NOUNS)}-{secrets.token_hex(2)}"
