"""Sellers' building blocks that need no database: buyer aliases, token formats, input checks, buyer messages."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from talk.directory import DirectoryError
from talk.models import new_call_token
from talk.sellers import (
    EndpointSummary, EndpointUnavailable, InvalidField, buyer_alias, clean_text, new_endpoint_token, parse_expiry,
)
from talk.voicemails import check_file_name, new_voicemail_id

SECRET = b"k" * 32
VISITORS = [f"v_{n:020d}" for n in range(200)]


def test_buyer_alias_is_four_digits_and_stable_per_buyer_and_seller():
    alias = buyer_alias(SECRET, VISITORS[0], 7)
    assert re.fullmatch(r"Buyer [1-9]\d{3}", alias)
    assert buyer_alias(SECRET, VISITORS[0], 7) == alias
    assert all(re.fullmatch(r"Buyer [1-9]\d{3}", buyer_alias(SECRET, v, 7)) for v in VISITORS)


def test_buyer_alias_differs_across_sellers_and_secrets():
    # Two sellers can't match up their buyers by alias: for almost every buyer the aliases differ (4 digits: a few
    # coincide by chance, about 1 in 9000).
    same_across_sellers = sum(buyer_alias(SECRET, v, 1) == buyer_alias(SECRET, v, 2) for v in VISITORS)
    same_across_secrets = sum(buyer_alias(SECRET, v, 1) == buyer_alias(b"other", v, 1) for v in VISITORS)
    assert same_across_sellers <= 2 and same_across_secrets <= 2
    # ... and one seller's buyers get spread-out aliases.
    assert len({buyer_alias(SECRET, v, 1) for v in VISITORS}) > 180


def test_the_alias_does_not_contain_the_visitor_id_or_its_digits():
    visitor = "v_12345678901234567890"
    assert buyer_alias(SECRET, visitor, 1).split()[1] not in visitor


def test_tokens_are_opaque_unguessable_and_fit_their_columns():
    endpoint_tokens = {new_endpoint_token() for _ in range(1000)}
    assert len(endpoint_tokens) == 1000
    for token in endpoint_tokens:
        assert re.fullmatch(r"se_[A-Za-z0-9_-]{32}", token) and len(token) <= 48  # 192 random bits
    for token in (new_call_token() for _ in range(100)):
        assert re.fullmatch(r"q_[A-Za-z0-9_-]{32}", token)
    assert re.fullmatch(r"vm_[A-Za-z0-9_-]{22}", new_voicemail_id())


@pytest.mark.parametrize("reason, words", [
    ("unknown", "not valid"), ("revoked", "can no longer be called"), ("expired", "expired"),
])
def test_dead_endpoints_have_a_clear_message_for_the_buyer(reason, words):
    error = EndpointUnavailable(reason, 3, 4)
    assert error.reason == reason and words in error.message and isinstance(error, DirectoryError)
    assert "seller@" not in error.message and "token" not in error.message


def test_endpoint_status():
    now = datetime(2027, 1, 1, tzinfo=timezone.utc)
    base = dict(token="se_x", seller_email="s@x", seller_public_name="S", site_key="k", listing=None, label=None,
                created_at=now - timedelta(days=1))
    assert EndpointSummary(**base, expires_at=None, revoked_at=None).status(now) == "active"
    assert EndpointSummary(**base, expires_at=now, revoked_at=None).status(now) == "expired"
    assert EndpointSummary(**base, expires_at=now + timedelta(seconds=1), revoked_at=None).status(now) == "active"
    assert EndpointSummary(**base, expires_at=now, revoked_at=now).status(now) == "revoked"


@pytest.mark.parametrize("value, expected", [
    ("2027-01-31", datetime(2027, 1, 31, tzinfo=timezone.utc)),
    ("2027-01-31T00:00Z", datetime(2027, 1, 31, tzinfo=timezone.utc)),
    ("2027-01-31T12:00+02:00", datetime(2027, 1, 31, 10, tzinfo=timezone.utc)),
])
def test_expiry_accepts_iso_dates_and_datetimes(value, expected):
    parsed = parse_expiry(value)
    assert parsed == expected and parsed.tzinfo == timezone.utc


@pytest.mark.parametrize("value", ["tomorrow", "2027-13-01", "", "31.01.2027"])
def test_expiry_refuses_anything_else(value):
    with pytest.raises(InvalidField, match="expires_at"):
        parse_expiry(value)


def test_listing_and_label_text_is_trimmed_bounded_and_single_line():
    assert clean_text("  SKU-1 ", "listing") == "SKU-1"
    assert clean_text("   ", "listing") is None and clean_text(None, "label") is None
    assert clean_text("x" * 120, "label") == "x" * 120
    with pytest.raises(InvalidField, match="listing: at most 120"):
        clean_text("x" * 121, "listing")
    with pytest.raises(InvalidField, match="label: no control"):
        clean_text("two\nlines", "label")
    with pytest.raises(InvalidField, match="public_name: required"):
        clean_text(" ", "public_name", required=True)


@pytest.mark.parametrize("name", ["../secret.key", "a/b.wav", "/etc/passwd", ".hidden", "", "x" * 101, "a..b"])
def test_voicemail_files_stay_in_their_folder(name):
    with pytest.raises(ValueError):
        check_file_name(name)


def test_voicemail_file_names():
    assert check_file_name("vm_abc-DEF_123.wav") == "vm_abc-DEF_123.wav"
