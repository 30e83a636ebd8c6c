"""What brought a visitor: UTM parameters and ad click ids read from a page URL, and a traffic source from them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

UTM_FIELDS = ("source", "medium", "campaign", "term", "content")
# Ad click ids and the network that sets them, in the order we prefer when a URL has several.
CLICK_IDS = {
    "gclid": "google", "gbraid": "google", "wbraid": "google", "fbclid": "facebook", "msclkid": "microsoft",
    "ttclid": "tiktok", "li_fat_id": "linkedin",
}
PAID_MEDIA = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_social", "paidsocial", "display", "cpm", "banner"})
SEARCH_HOSTS = ("google.", "bing.", "duckduckgo.", "yahoo.", "ecosia.", "baidu.", "yandex.", "qwant.", "startpage.")
SOCIAL_HOSTS = ("facebook.", "instagram.", "t.co", "twitter.", "x.com", "linkedin.", "pinterest.", "reddit.",
                "youtube.", "tiktok.", "lnkd.in")
MAX_PARAM = 200


@dataclass(frozen=True)
class Attribution:
    path: str
    utm: dict[str, str | None]
    click_id_type: str | None
    click_id: str | None


def attribution_of(url: str) -> Attribution:
    parts = urlsplit(url)
    query = {k.lower(): v[:MAX_PARAM] for k, v in parse_qsl(parts.query, keep_blank_values=False)}
    utm = {name: query.get(f"utm_{name}") or None for name in UTM_FIELDS}
    click_type = next((name for name in CLICK_IDS if query.get(name)), None)
    return Attribution(parts.path or "/", utm, click_type, query.get(click_type) if click_type else None)


def _host(url: str | None) -> str:
    try:
        return (urlsplit(url or "").hostname or "").lower()
    except ValueError:
        return ""


def _matches(host: str, patterns: tuple[str, ...]) -> bool:
    return any(host == p or host.startswith(p) or f".{p}" in f".{host}" for p in patterns)


def classify_source(url: str, referrer: str | None, utm: dict[str, str | None], click_id_type: str | None) -> dict:
    """The traffic source of a session, from its first page view."""
    source = {"kind": "direct", "source": None, "medium": utm.get("medium"), "campaign": utm.get("campaign"),
              "referrer": referrer or None, "click_id": click_id_type}
    ref_host = _host(referrer)
    if ref_host and ref_host == _host(url):
        ref_host = ""  # a referrer on the same site says nothing about where the visit came from
    if click_id_type:
        return {**source, "kind": "paid", "source": utm.get("source") or CLICK_IDS[click_id_type]}
    if utm.get("source"):
        kind = "paid" if (utm.get("medium") or "").lower() in PAID_MEDIA else "campaign"
        return {**source, "kind": kind, "source": utm["source"]}
    if ref_host:
        kind = "search" if _matches(ref_host, SEARCH_HOSTS) else "social" if _matches(ref_host, SOCIAL_HOSTS) else "referral"
        return {**source, "kind": kind, "source": ref_host.removeprefix("www.")}
    return source
