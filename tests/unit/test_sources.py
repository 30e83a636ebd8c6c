"""Traffic sources and attribution parameters read from page URLs."""

import pytest

from analytics.sources import attribution_of, classify_source


def test_utm_and_click_ids_are_read_from_the_url():
    a = attribution_of("https://shop.test/p/1?utm_source=news&UTM_MEDIUM=email&utm_campaign=nov&gclid=abc&x=1")
    assert a.path == "/p/1"
    assert a.utm == {"source": "news", "medium": "email", "campaign": "nov", "term": None, "content": None}
    assert (a.click_id_type, a.click_id) == ("gclid", "abc")
    assert attribution_of("https://shop.test").path == "/"


@pytest.mark.parametrize("url, referrer, kind, source", [
    ("https://shop.test/", "", "direct", None),
    ("https://shop.test/", "https://shop.test/other", "direct", None),
    ("https://shop.test/", "https://www.google.com/", "search", "google.com"),
    ("https://shop.test/", "https://duckduckgo.com/", "search", "duckduckgo.com"),
    ("https://shop.test/", "https://t.co/xyz", "social", "t.co"),
    ("https://shop.test/", "https://m.facebook.com/", "social", "m.facebook.com"),
    ("https://shop.test/", "https://blog.example.org/post", "referral", "blog.example.org"),
    ("https://shop.test/?utm_source=newsletter&utm_medium=email", "", "campaign", "newsletter"),
    ("https://shop.test/?utm_source=google&utm_medium=cpc", "https://www.google.com/", "paid", "google"),
    ("https://shop.test/?fbclid=1", "https://m.facebook.com/", "paid", "facebook"),
])
def test_sources(url, referrer, kind, source):
    a = attribution_of(url)
    result = classify_source(url, referrer, a.utm, a.click_id_type)
    assert (result["kind"], result["source"]) == (kind, source)
