"""Settings: a base every function reads and one class per function; defaults written once (in the fields),
overrides and errors that name the variable, read at each handler's cold start."""

import sys

import pytest
from pydantic import ValidationError

from pulse.settings import (
    DEFAULT_HALF_LIVES,
    ApiSettings,
    CatalogSettings,
    ConfigurationError,
    EncoderSettings,
    IngestSettings,
    Settings,
    TrainingPolicy,
    TrainSettings,
    clear_settings,
    load_settings,
)
from pulse_dev.local.functions import import_handler
from tests.paths import REPO_ROOT

FUNCTION_SETTINGS = {"IngestFunction": IngestSettings, "ApiFunction": ApiSettings,
                     "CatalogFunction": CatalogSettings, "TrainFunction": TrainSettings}
EVERY_CLASS = (Settings, EncoderSettings, *FUNCTION_SETTINGS.values())


def variables(kind: type[Settings]) -> set[str]:
    return {kind.variable(name) for name in kind.model_fields if name != "pinned"}


def test_defaults():
    config = IngestSettings.from_env({})
    assert config.half_lives == DEFAULT_HALF_LIVES
    assert config.blend_weights == {"short": 0.5, "long": 0.5}
    assert config.type_weights.by_type["dislike"] < 0
    assert (config.recent_items_limit, config.dedup_window, config.encoder_threads) == (200, 512, 1)


def test_overrides_in_both_notations():
    config = IngestSettings.from_env({
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


def test_unset_blend_weights_follow_the_half_lives_and_flags_read_the_usual_words():
    assert Settings.from_env({"PULSE_HALF_LIVES": "short=60,day=86400"}).blend_weights == {"short": 0.5, "day": 1.0}
    assert Settings(half_lives={"only": 60.0}).blend_weights == {"only": 1.0}
    for word, value in (("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False),
                        ("", False)):
        assert CatalogSettings.from_env({"PULSE_CATALOG_SKIP_INVALID": word}).catalog_skip_invalid is value


@pytest.mark.parametrize(("kind", "environ", "message"), [
    (Settings, {"PULSE_HALF_LIVES": "short=abc"}, "PULSE_HALF_LIVES='short=abc' is not a list of name=number"),
    (Settings, {"PULSE_HALF_LIVES": "short=-5"}, "PULSE_HALF_LIVES: short=-5.0 must be a positive finite number"),
    (Settings, {"PULSE_HALF_LIVES": "{}"}, "PULSE_HALF_LIVES is empty"),
    (Settings, {"PULSE_BLEND_WEIGHTS": "medium=1"}, "PULSE_BLEND_WEIGHTS names scales ['medium']"),
    (Settings, {"PULSE_TYPE_WEIGHTS": "teleport=1"}, "PULSE_TYPE_WEIGHTS names unknown event types ['teleport']"),
    (Settings, {"PULSE_RECENT_ITEMS": "many"}, "PULSE_RECENT_ITEMS='many' is not a whole number"),
    (Settings, {"PULSE_DEDUP_WINDOW": "0"}, "PULSE_DEDUP_WINDOW='0' must be at least 1"),
    (Settings, {"PULSE_TTL_DAYS": "inf"}, "PULSE_TTL_DAYS='inf' is not finite"),
    (Settings, {"PULSE_TTL_DAYS": "0"}, "PULSE_TTL_DAYS='0' must be greater than 0"),
    (Settings, {"PULSE_MIN_STRENGTH": "low"}, "PULSE_MIN_STRENGTH='low' is not a number"),
    (Settings, {"PULSE_RATING_MAX": "2"}, "PULSE_RATING_MAX must be greater than PULSE_RATING_NEUTRAL"),
    (Settings, {"PULSE_RATING_WEIGHTING": "loud"}, "PULSE_RATING_WEIGHTING='loud' must be one of stars, flat"),
    (Settings, {"PULSE_POPULARITY_WEIGHT": "1.5"}, "PULSE_POPULARITY_WEIGHT='1.5' must be at most 1"),
    (Settings, {"PULSE_POPULARITY_WEIGHT": "-0.1"}, "PULSE_POPULARITY_WEIGHT='-0.1' must be at least 0"),
    (IngestSettings, {"PULSE_WRITE_CONCURRENCY": "0"}, "PULSE_WRITE_CONCURRENCY='0' must be at least 1"),
    (IngestSettings, {"PULSE_ENCODER_THREADS": "two"}, "PULSE_ENCODER_THREADS='two' is not a whole number"),
    (CatalogSettings, {"PULSE_CATALOG_SKIP_INVALID": "maybe"},
     "PULSE_CATALOG_SKIP_INVALID='maybe' must be true or false"),
    (ApiSettings, {"PULSE_API_AUTH": "cognito"}, "PULSE_API_AUTH='cognito' must be one of jwt, iam, none"),
    (TrainSettings, {"PULSE_TRAINING_MAX_EVENTS": "0"}, "PULSE_TRAINING_MAX_EVENTS='0' must be at least 1"),
    (TrainSettings, {"PULSE_TRAINING_DAYS": "abc"}, "PULSE_TRAINING_DAYS='abc' is not a whole number"),
    (TrainSettings, {"PULSE_COLLAB_DIM": "1"}, "PULSE_COLLAB_DIM='1' must be at least 2"),
    # spaces for a choice and a fraction for a count are refused, not defaulted
    (ApiSettings, {"PULSE_API_AUTH": "  "}, "PULSE_API_AUTH='' must be one of jwt, iam, none"),
    (ApiSettings, {"PULSE_USER_ID_CLAIM": " "}, "PULSE_USER_ID_CLAIM is blank"),
    (CatalogSettings, {"PULSE_CATALOG_SKIP_INVALID": " "}, "PULSE_CATALOG_SKIP_INVALID='' must be true or false"),
    (IngestSettings, {"PULSE_WRITE_CONCURRENCY": "1.0"}, "PULSE_WRITE_CONCURRENCY='1.0' is not a whole number"),
    (TrainSettings, {"PULSE_TRAINING_DAYS": "30.5"}, "PULSE_TRAINING_DAYS='30.5' is not a whole number"),
])
def test_errors_name_the_variable(kind, environ, message):
    with pytest.raises(ConfigurationError) as error:
        kind.from_env(environ)
    assert message in str(error.value)


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(ConfigurationError) as error:
        TrainSettings.from_env({"PULSE_TRAINING_DAYS": "abc", "PULSE_TTL_DAYS": "-1"})
    assert "PULSE_TRAINING_DAYS='abc' is not a whole number" in str(error.value)
    assert "PULSE_TTL_DAYS='-1' must be greater than 0" in str(error.value)


LEARNED = {"half_lives": {"short": 600.0, "long": 86400.0}, "blend_weights": {"short": 1.0, "long": 0.2},
           "rating_weighting": "flat", "popularity_weight": 0.3, "trending_half_life": 604800.0}


def test_the_popularity_weight_is_learned_unless_pinned_and_the_window_is_a_year_of_at_most_a_million_events():
    free = TrainSettings.from_env({})
    assert (free.popularity_weight, free.training_days, free.training_max_events) == (0.0, 365, 1_000_000)
    assert free.pinned == frozenset()
    served = free.serving(LEARNED)
    assert served.popularity_weight == 0.3 and served.type_weights.rating_weighting == "flat"
    assert type(served) is TrainSettings and served.training_days == 365  # a copy of the same function's kind
    assert free.serving({key: value for key, value in LEARNED.items() if key != "popularity_weight"}
                        ).popularity_weight == 0.0
    pinned = TrainSettings.from_env({"PULSE_POPULARITY_WEIGHT": "0.1", "PULSE_TRAINING_MAX_EVENTS": "5000",
                                     "PULSE_TRAINING_DAYS": "30"})
    assert pinned.pinned == frozenset({"popularity_weight"})
    assert (pinned.popularity_weight, pinned.training_days, pinned.training_max_events) == (0.1, 30, 5000)
    served = pinned.serving(LEARNED)
    assert served.popularity_weight == 0.1 and served.type_weights.rating_weighting == "flat"
    assert Settings.from_env({"PULSE_POPULARITY_WEIGHT": "0"}).serving(LEARNED).popularity_weight == 0.0


def test_the_training_takes_its_window_and_the_pinned_popularity_weight_from_the_settings():
    from pulse.training.job import deployment_options

    options = deployment_options(TrainSettings.from_env({"PULSE_POPULARITY_WEIGHT": "0.2",
                                                         "PULSE_TRAINING_MAX_EVENTS": "5000"}))
    assert (options["days"], options["max_events"]) == (365, 5000)
    assert options["pinned"].popularity_weight == 0.2 and "popularity_weight" in options["pinned_names"]
    assert options["policy"] == TrainingPolicy()  # the policy's own defaults, untouched by the environment


def test_the_space_and_the_training_default_to_the_train_settings():
    from pulse.training.collaborative import SpaceConfig
    from pulse.training.job import deployment_options

    space = SpaceConfig()
    assert (space.dim, space.text_weight, space.collab_weight) == (128, 0.25, 0.75)
    assert deployment_options(TrainSettings())["config"] == space


def template_environment() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """({function: the PULSE_* variables template.yaml gives it, Globals included}, {each PULSE_* variable the
    template feeds from a parameter: that parameter's default, as CloudFormation writes it (a string)})."""
    from pulse_dev.local.template import load_template

    template = load_template(REPO_ROOT / "template.yaml")
    parameters = template["Parameters"]
    shared = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    functions = {name: {**shared, **(resource["Properties"].get("Environment") or {}).get("Variables", {})}
                 for name, resource in template["Resources"].items() if resource["Type"] == "AWS::Serverless::Function"}
    fed = {name: value["Ref"] for variables_ in functions.values() for name, value in variables_.items()
           if name.startswith("PULSE_") and isinstance(value, dict) and value.get("Ref") in parameters}
    assert len(fed) >= 20
    defaults = {name: str(parameters[parameter].get("Default", "")) for name, parameter in fed.items()}
    return {name: {key: value for key, value in variables_.items() if key.startswith("PULSE_")}
            for name, variables_ in functions.items()}, defaults


def test_every_template_parameter_default_gives_the_settings_the_code_defaults_to():
    functions, defaults = template_environment()
    for name, kind in FUNCTION_SETTINGS.items():
        for variable in sorted(set(functions[name]) & variables(kind) & set(defaults)):
            field = next(field for field in kind.model_fields if kind.variable(field) == variable)
            read = getattr(kind.from_env({variable: defaults[variable]}), field)
            assert read == kind.default(field), (name, variable, defaults[variable])
        environment = {variable: defaults[variable] for variable in functions[name] if variable in defaults}
        assert kind.from_env(environment) == kind.from_env({}) == kind()
        assert kind.from_env(environment).pinned == frozenset()  # an empty default leaves a setting learned


def test_the_template_default_comparison_notices_a_parameter_default_that_disagrees():
    _, environment = template_environment()
    environment["PULSE_DEDUP_WINDOW"] = str(int(environment["PULSE_DEDUP_WINDOW"]) + 1)
    assert Settings.from_env(environment) != Settings.from_env({})


def test_each_function_class_reads_what_template_gives_that_function_alone():
    functions, _ = template_environment()
    shared = set.intersection(*(set(variables_) for variables_ in functions.values()))
    assert shared - {"PULSE_ENCODER_THREADS"} <= variables(Settings)
    for name, kind in FUNCTION_SETTINGS.items():
        own = set(functions[name]) - shared - {"PULSE_LOG_KEY_SECRET"}  # the key is read by pulse.privacy
        assert own <= variables(kind) - variables(Settings), name
        for other in set(FUNCTION_SETTINGS.values()) - {kind}:
            assert not own & (variables(other) - variables(Settings)), (name, other.__name__)
    assert "PULSE_ENCODER_THREADS" in variables(IngestSettings) & variables(CatalogSettings)
    assert "PULSE_ENCODER_THREADS" not in variables(ApiSettings) | variables(TrainSettings)


def test_a_class_takes_only_its_own_fields_by_name():
    assert IngestSettings(write_concurrency=2, ttl_days=5).write_concurrency == 2
    for kind, foreign in ((Settings, {"stream_name": "s"}), (ApiSettings, {"write_concurrency": 2}),
                          (IngestSettings, {"training_days": 3}), (TrainSettings, {"catalog_skip_invalid": True})):
        with pytest.raises(ValidationError):
            kind(**foreign)
    assert ApiSettings.from_env({"PULSE_TRAINING_DAYS": "abc"}).stream_name is None  # not its variable: unread


def test_each_field_is_defined_once_with_one_variable_and_one_default():
    """The structure that keeps a default in one place: every field belongs to one class (a subclass adds, it
    never redefines), names one environment variable no other field names, and an empty environment gives the
    defaults keyword construction gives."""
    seen: dict[str, str] = {}
    for kind in EVERY_CLASS:
        own = set(kind.__annotations__)
        for base in kind.__mro__[1:]:
            if isinstance(base, type) and issubclass(base, Settings):
                assert not own & set(base.__annotations__), (kind.__name__, base.__name__)
        for name in own - {"model_config"}:
            if name == "pinned":
                continue
            variable = kind.variable(name)
            assert variable.startswith("PULSE_") and seen.setdefault(variable, name) == name, (kind, name)
        assert kind.from_env({}) == kind()


def test_an_unset_admin_scope_is_the_templates_default_and_an_empty_one_means_none():
    assert ApiSettings.from_env({}).access.admin_scope == "pulse/admin"
    assert ApiSettings.from_env({"PULSE_ADMIN_SCOPE": ""}).access.admin_scope == ""
    assert ApiSettings.from_env({"PULSE_USER_ID_CLAIM": ""}).access.user_id_claim == "sub"  # empty: the default


def test_without_pulse_table_the_table_name_is_the_default_name():
    assert Settings.from_env({}).table_name == "pulse-interest"


def test_a_required_setting_names_its_variable():
    with pytest.raises(ConfigurationError, match="PULSE_DLQ_URL is required by this function"):
        IngestSettings().require("dead_letter_queue_url")
    assert ApiSettings(stream_name="s").require("stream_name") == "s"


def test_settings_are_read_once_per_container_and_the_function_class_serves_the_base(monkeypatch):
    clear_settings()
    monkeypatch.setenv("PULSE_TRAINING_DAYS", "30")
    try:
        train = load_settings(TrainSettings)
        monkeypatch.setenv("PULSE_TRAINING_DAYS", "40")
        assert load_settings(TrainSettings) is train and train.training_days == 30
        assert load_settings(Settings) is train  # code that needs the shared fields gets the function's object
        clear_settings()
        assert load_settings(TrainSettings).training_days == 40
    finally:
        clear_settings()


@pytest.mark.parametrize(("function", "variable", "value", "message"), [
    ("train", "PULSE_TRAINING_DAYS", "abc", "PULSE_TRAINING_DAYS='abc' is not a whole number"),
    ("ingest", "PULSE_WRITE_CONCURRENCY", "0", "PULSE_WRITE_CONCURRENCY='0' must be at least 1"),
    ("catalog", "PULSE_CATALOG_SKIP_INVALID", "maybe", "PULSE_CATALOG_SKIP_INVALID='maybe' must be true or false"),
])
def test_a_bad_setting_fails_the_handlers_cold_start_naming_the_variable(monkeypatch, function, variable, value,
                                                                          message):
    """As the local stack (and Lambda) import a handler: the import itself fails, and leaves nothing half-made."""
    module = f"pulse_test_cold_start_{function}"
    clear_settings()
    monkeypatch.setenv(variable, value)
    try:
        with pytest.raises(ConfigurationError) as error:
            import_handler(REPO_ROOT / "functions" / function / "app.py", "lambda_handler", module)
        assert message in str(error.value)
        assert module not in sys.modules
        monkeypatch.delenv(variable)
        assert callable(import_handler(REPO_ROOT / "functions" / function / "app.py", "lambda_handler", module))
    finally:
        sys.modules.pop(module, None)
        clear_settings()


def test_an_empty_choice_is_the_default_and_a_count_is_read_as_int_reads_it():
    """Beside the refusals in test_errors_name_the_variable (found by review of the pydantic rewrite:
    PULSE_API_AUTH=' ' had become the open mode, and '1.0' a count)."""
    assert ApiSettings.from_env({"PULSE_API_AUTH": ""}).api_auth == ApiSettings().api_auth  # empty: the default
    assert IngestSettings.from_env({"PULSE_DEDUP_WINDOW": " 1_000 "}).dedup_window == 1000
