"""One validated configuration object: defaults, overrides and errors that name the variable."""

import pytest

from pulse.settings import DEFAULT_HALF_LIVES, ConfigurationError, Settings
from tests.paths import REPO_ROOT


def test_defaults():
    config = Settings.from_env({})
    assert config.half_lives == DEFAULT_HALF_LIVES
    assert config.blend_weights == {"short": 0.5, "long": 0.5}
    assert config.type_weights.by_type["dislike"] < 0
    assert (config.recent_items_limit, config.dedup_window, config.encoder_threads) == (200, 512, 1)


def test_overrides_in_both_notations():
    config = Settings.from_env({
        "PULSE_HALF_LIVES": "session=600, week=604800",
        "PULSE_BLEND_WEIGHTS": '{"session": 0.7, "week": 0.3}',
        "PULSE_TYPE_WEIGHTS": "purchase=5,skip=-1",
        "PULSE_RECENT_ITEMS": "50", "PULSE_TTL_DAYS": "30", "PULSE_ENCODER_THREADS": "2",
        "PULSE_TABLE": "t", "PULSE_DLQ_URL": "https://sqs/q", "PULSE_RATING_WEIGHTING": "Flat",
    })
    assert config.type_weights.rating_weighting == "flat"
    assert config.half_lives == {"session": 600.0, "week": 604800.0}
    assert config.blend_weights == {"session": 0.7, "week": 0.3}
    assert config.type_weights.by_type["purchase"] == 5 and config.type_weights.by_type["view"] == 0.5
    assert (config.recent_items_limit, config.ttl_days, config.encoder_threads) == (50, 30.0, 2)
    assert (config.table_name, config.dead_letter_queue_url) == ("t", "https://sqs/q")


@pytest.mark.parametrize(("environ", "message"), [
    ({"PULSE_HALF_LIVES": "short=abc"}, "PULSE_HALF_LIVES='short=abc' is not a list of name=number"),
    ({"PULSE_HALF_LIVES": "short=-5"}, "PULSE_HALF_LIVES: short=-5.0 must be a positive finite number"),
    ({"PULSE_BLEND_WEIGHTS": "medium=1"}, "PULSE_BLEND_WEIGHTS names scales ['medium']"),
    ({"PULSE_TYPE_WEIGHTS": "teleport=1"}, "PULSE_TYPE_WEIGHTS names unknown event types ['teleport']"),
    ({"PULSE_RECENT_ITEMS": "many"}, "PULSE_RECENT_ITEMS='many' is not a whole number"),
    ({"PULSE_DEDUP_WINDOW": "0"}, "PULSE_DEDUP_WINDOW='0' must be at least 1"),
    ({"PULSE_TTL_DAYS": "inf"}, "PULSE_TTL_DAYS='inf' is not finite"),
    ({"PULSE_RATING_MAX": "2"}, "PULSE_RATING_MAX must be greater than PULSE_RATING_NEUTRAL"),
    ({"PULSE_RATING_WEIGHTING": "loud"}, "PULSE_RATING_WEIGHTING='loud' must be one of stars, flat"),
    ({"PULSE_POPULARITY_WEIGHT": "1.5"}, "PULSE_POPULARITY_WEIGHT='1.5' must be at most 1"),
    ({"PULSE_POPULARITY_WEIGHT": "-0.1"}, "PULSE_POPULARITY_WEIGHT='-0.1' must be at least 0"),
    ({"PULSE_TRAINING_MAX_EVENTS": "0"}, "PULSE_TRAINING_MAX_EVENTS='0' must be at least 1"),
])
def test_errors_name_the_variable(environ, message):
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env(environ)
    assert message in str(error.value)


LEARNED = {"half_lives": {"short": 600.0, "long": 86400.0}, "blend_weights": {"short": 1.0, "long": 0.2},
           "rating_weighting": "flat", "popularity_weight": 0.3, "trending_half_life": 604800.0}


def test_the_popularity_weight_is_learned_unless_pinned_and_the_window_is_a_year_of_at_most_a_million_events():
    free = Settings.from_env({})
    assert (free.popularity_weight, free.training_days, free.training_max_events) == (0.0, 365, 1_000_000)
    assert free.pinned == frozenset()
    served = free.serving(LEARNED)
    assert served.popularity_weight == 0.3 and served.type_weights.rating_weighting == "flat"
    assert free.serving({key: value for key, value in LEARNED.items() if key != "popularity_weight"}
                        ).popularity_weight == 0.0
    pinned = Settings.from_env({"PULSE_POPULARITY_WEIGHT": "0.1", "PULSE_TRAINING_MAX_EVENTS": "5000",
                                "PULSE_TRAINING_DAYS": "30"})
    assert pinned.pinned == frozenset({"popularity_weight"})
    assert (pinned.popularity_weight, pinned.training_days, pinned.training_max_events) == (0.1, 30, 5000)
    served = pinned.serving(LEARNED)
    assert served.popularity_weight == 0.1 and served.type_weights.rating_weighting == "flat"
    assert Settings.from_env({"PULSE_POPULARITY_WEIGHT": "0"}).serving(LEARNED).popularity_weight == 0.0


def test_the_training_takes_its_window_and_the_pinned_popularity_weight_from_the_settings():
    from pulse.training.job import deployment_options

    options = deployment_options(Settings.from_env({"PULSE_POPULARITY_WEIGHT": "0.2",
                                                    "PULSE_TRAINING_MAX_EVENTS": "5000"}))
    assert (options["days"], options["max_events"]) == (365, 5000)
    assert options["pinned"].popularity_weight == 0.2 and "popularity_weight" in options["pinned_names"]


def template_defaults_as_environment() -> dict[str, str]:
    """Each PULSE_* variable that template.yaml feeds from a parameter, at that parameter's default, as
    CloudFormation writes it (a string)."""

    from pulse_dev.local.template import load_template

    template = load_template(REPO_ROOT / "template.yaml")
    parameters = template["Parameters"]
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in template["Resources"].values():
        variables.update(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))
    fed = {name: value["Ref"] for name, value in variables.items()
           if name.startswith("PULSE_") and isinstance(value, dict) and value.get("Ref") in parameters}
    assert len(fed) >= 20
    return {name: str(parameters[parameter].get("Default", "")) for name, parameter in fed.items()}


def test_every_template_parameter_default_gives_the_settings_the_code_defaults_to():
    environment = template_defaults_as_environment()
    assert Settings.from_env(environment) == Settings.from_env({})
    assert Settings.from_env(environment).pinned == frozenset()  # an empty default leaves a setting learned


def test_the_template_default_comparison_notices_a_parameter_default_that_disagrees():
    environment = template_defaults_as_environment()
    environment["PULSE_DEDUP_WINDOW"] = str(int(environment["PULSE_DEDUP_WINDOW"]) + 1)
    assert Settings.from_env(environment) != Settings.from_env({})


def test_an_unset_admin_scope_is_the_templates_default_and_an_empty_one_means_none():
    assert Settings.from_env({}).access.admin_scope == "pulse/admin"
    assert Settings.from_env({"PULSE_ADMIN_SCOPE": ""}).access.admin_scope == ""


def test_without_pulse_table_the_table_name_is_the_default_name():
    assert Settings.from_env({}).table_name == "pulse-interest"
