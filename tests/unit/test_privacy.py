"""The log-reference key: there is no built-in one; an explicit key must be long enough."""

import pytest

from pulse.privacy import LogKeyUnavailableError, user_ref


def test_without_a_configured_key_no_reference_is_made(monkeypatch):
    monkeypatch.delenv("PULSE_LOG_KEY_SECRET", raising=False)
    monkeypatch.delenv("PULSE_LOG_HASH_KEY", raising=False)
    with pytest.raises(LogKeyUnavailableError, match="no log-reference key: set PULSE_LOG_KEY_SECRET"):
        user_ref("alice")


def test_an_explicit_key_must_be_long_enough_and_keys_the_reference(monkeypatch):
    monkeypatch.delenv("PULSE_LOG_KEY_SECRET", raising=False)
    monkeypatch.setenv("PULSE_LOG_HASH_KEY", "short")
    with pytest.raises(LogKeyUnavailableError, match="is 5 bytes; at least 16 are needed"):
        user_ref("alice")
    monkeypatch.setenv("PULSE_LOG_HASH_KEY", "k" * 16)
    first = user_ref("alice")
    monkeypatch.setenv("PULSE_LOG_HASH_KEY", "j" * 16)
    assert user_ref("alice") != first and len(first) == 18 and first.startswith("u:")
