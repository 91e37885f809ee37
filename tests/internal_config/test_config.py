from internal_config.models import Config
from internal_config.services import config_get, config_get_int, config_seed_defaults


def test_get_config_value_returns_the_stored_value(db):
    assert Config.get_config_value("default_credits") == "3"


def test_get_config_value_returns_default_when_missing(db):
    assert Config.get_config_value("nope", default="fallback") == "fallback"
    assert config_get("nope") is None


def test_get_config_values_maps_each_name_missing_ones_to_none(db):
    assert Config.get_config_values(["default_credits", "nope"]) == {
        "default_credits": "3",
        "nope": None,
    }


def test_config_get_int_falls_back_on_garbage(db):
    Config.objects.filter(name="default_credits").update(value="three")

    assert config_get_int("default_credits", 9) == 9
    assert config_get_int("default_ai_use_per_day", 9) == 5


def test_seeding_defaults_never_overwrites_an_edit(db):
    Config.objects.filter(name="openai_api_url").update(value="http://127.0.0.1:1/v1")

    assert config_seed_defaults() == 0
    assert Config.get_config_value("openai_api_url") == "http://127.0.0.1:1/v1"
