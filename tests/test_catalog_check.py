"""The catalog comparison rules and the providers' list shapes (pure; no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.catalog_check import (
    EXIT_OK,
    EXIT_ROUTED_GONE,
    EXIT_UNFETCHED,
    CheckReport,
    Listing,
    compare,
    unfetched,
)
from workers.providers.listing import models_url, parse_key_quota, parse_models

ids = st.sets(st.sampled_from([f"m{i}" for i in range(12)]), max_size=12)


@settings(max_examples=200, derandomize=True)
@given(configured=ids, routed=ids, listed=ids, free=ids)
def test_compare_partitions_what_is_gone(configured, routed, listed, free) -> None:
    free &= listed
    report = compare("p", sorted(configured), routed, Listing(frozenset(listed),
                                                               frozenset(free)))
    gone = set(report.gone_routed) | set(report.gone_unrouted)
    assert gone == configured - listed
    assert not set(report.gone_routed) & set(report.gone_unrouted)
    assert set(report.gone_routed) == (configured - listed) & routed
    assert set(report.new_free) == free - configured
    assert report.new_free == sorted(report.new_free)
    expected = EXIT_ROUTED_GONE if report.gone_routed else EXIT_OK
    assert CheckReport([report]).exit_code == expected


@settings(max_examples=100, derandomize=True)
@given(configured=ids, routed=ids, listed=ids)
def test_an_unfetched_list_concludes_nothing_but_exits_1(configured, routed, listed) -> None:
    ok = compare("a", sorted(configured), routed, Listing(frozenset(listed), frozenset()))
    report = CheckReport([ok, unfetched("b", "HTTP 503")])
    assert report.exit_code == (EXIT_ROUTED_GONE if ok.gone_routed else EXIT_UNFETCHED)
    assert all(not t.startswith("b/") for t in report.gone_targets())
    assert report.listed_targets({"a": sorted(configured), "b": ["x"]}) == [
        f"a/{m}" for m in sorted(configured) if m in listed]


def test_routed_targets_come_first_and_json_is_one_document() -> None:
    report = CheckReport([compare("g", ["old", "spare", "kept"], {"old"},
                                  Listing(frozenset({"kept", "new"}), frozenset({"new"})))])
    assert report.gone_targets() == ["g/old", "g/spare"]
    doc = report.to_json()
    assert doc["gone_routed"] == ["g/old"] and doc["exit_code"] == 4 and not doc["ok"]
    assert doc["providers"][0]["new_free"] == ["new"]


def test_openai_shape_lists_every_model_as_free() -> None:
    listing, more = parse_models("groq", {"object": "list", "data": [{"id": "a"}, {"id": "b"},
                                                                      {"no": "id"}]})
    assert listing.ids == listing.free == {"a", "b"} and not more


def test_openrouter_free_is_the_suffix_or_a_zero_price() -> None:
    listing, _ = parse_models("openrouter", {"data": [
        {"id": "x/y:free", "pricing": {"prompt": "0.1", "completion": "0.1"}},
        {"id": "x/z", "pricing": {"prompt": "0", "completion": "0.000"}},
        {"id": "x/paid", "pricing": {"prompt": "0.000001", "completion": "0"}},
        {"id": "x/odd", "pricing": {"prompt": None}},
    ]})
    assert listing.ids == {"x/y:free", "x/z", "x/paid", "x/odd"}
    assert listing.free == {"x/y:free", "x/z"}


def test_cloudflare_model_search_is_paged() -> None:
    url = models_url("cloudflare", "https://api.cloudflare.com/client/v4/accounts/A/ai/v1/", 3)
    assert url.startswith("https://api.cloudflare.com/client/v4/accounts/A/ai/models/search?")
    assert "page=3" in url and "task=Text+Generation" in url
    page = {"success": True, "result": [{"name": "@cf/a", "id": "uuid-1"}, {"name": "@cf/b"}],
            "result_info": {"page": 1, "per_page": 2, "total_count": 3}}
    listing, more = parse_models("cloudflare", page)
    assert listing.ids == {"@cf/a", "@cf/b"} and more
    last = {**page, "result_info": {"page": 2, "per_page": 2, "total_count": 3}}
    assert parse_models("cloudflare", last)[1] is False
    # The simulator (and any OpenAI-shaped answer) works for Cloudflare too.
    assert models_url("cloudflare", "http://127.0.0.1:9/cloudflare/v1") == (
        "http://127.0.0.1:9/cloudflare/v1/models")


def test_unknown_shapes_are_refused_clearly() -> None:
    import pytest

    from workers.providers.listing import ListingError

    for body in (None, [], {"models": []}, {"data": "x"}):
        with pytest.raises(ListingError, match="unexpected model list shape"):
            parse_models("groq", body)


@settings(max_examples=100, derandomize=True)
@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.text()),
                 st.fixed_dictionaries({"data": st.dictionaries(st.text(), st.integers())})))
def test_key_quota_parser_never_raises(body) -> None:
    assert parse_key_quota(body) is None or parse_key_quota(body).limit >= 0


def test_key_quota_reads_free_model_daily_requests() -> None:
    q = parse_key_quota({"data": {"label": "sk-or-v1-x...", "free_model_daily_requests":
                                  {"used": 12, "limit": 50, "remaining": 38}}})
    assert (q.used, q.limit, q.remaining) == (12, 50, 38)
    assert parse_key_quota({"data": {"usage": 1.5}}) is None
