"""The pure decision: strict versions, signed policy (revoked, floor), patch or full route."""

from __future__ import annotations

from typing import Any

import pytest

from updater.policy import (
    APP_NAME,
    LINUX,
    WINDOWS,
    BadVersionError,
    FullRoute,
    Install,
    NoOp,
    PatchRoute,
    Refuse,
    TargetInfo,
    build_catalog,
    decide,
    host_platform,
    parse_version,
    target_apps,
)


def _archive(version: str, length: int = 1000, app: str = APP_NAME, **user: Any) -> TargetInfo:
    user.setdefault("revoked", False)
    return TargetInfo(f"{app}-{version}.tar.gz", length, {"sha256": f"a{app}{version}"},
                      {"user": user, "tufup": {"required": False}})


def _patch(version: str, length: int = 10, app: str = APP_NAME) -> TargetInfo:
    return TargetInfo(f"{app}-{version}.patch", length, {"sha256": f"p{app}{version}"},
                      {"user": None, "tufup": {"tar_size": 5, "tar_hash": "h",
                                               "tar_hash_algorithm": "sha256"}})


CATALOG = build_catalog([
    _archive("1.0.0"), _archive("1.1.0"), _patch("1.1.0"), _archive("1.2.0"), _patch("1.2.0"),
])


@pytest.mark.parametrize("text", [
    "../1.0", "1.0/../x", "1.0", "1.0.0.0", "01.0.0", "1.0.0a1", " 1.0.0", "1.0.0\n", "", "v1.0.0",
    "1..0", "1.0.-1", "1.0.0/", "..", "1.0.0\x00", "９.0.0",
])
def test_bad_version_strings_are_refused(text: str) -> None:
    with pytest.raises(BadVersionError):
        parse_version(text)
    assert isinstance(decide("1.0.0", text, CATALOG), Refuse)


def test_canonical_versions_order_numerically() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.9")
    assert str(parse_version("0.0.0")) == "0.0.0"


def test_short_spelling_1_0_is_not_the_same_release_as_1_0_0() -> None:
    decision = decide("1.1.0", "1.0", CATALOG)
    assert isinstance(decision, Refuse) and "canonical" in decision.reason


def test_same_version_is_a_no_op() -> None:
    assert isinstance(decide("1.1.0", "1.1.0", CATALOG), NoOp)


def test_unlisted_target_is_refused() -> None:
    decision = decide("1.0.0", "1.3.0", CATALOG)
    assert isinstance(decision, Refuse) and "not listed" in decision.reason


def test_revoked_target_is_refused() -> None:
    catalog = build_catalog([_archive("1.0.0"), _archive("1.1.0", revoked=True)])
    decision = decide("1.0.0", "1.1.0", catalog)
    assert isinstance(decision, Refuse) and "revoked" in decision.reason


def test_effective_floor_is_the_highest_floor_over_all_targets() -> None:
    catalog = build_catalog([
        _archive("1.0.0", floor="1.0.0"), _archive("1.1.0", floor="1.1.0"), _archive("1.2.0"),
    ])
    assert str(catalog.effective_floor) == "1.1.0"
    refused = decide("1.2.0", "1.0.0", catalog)
    assert isinstance(refused, Refuse) and "below the signed minimum" in refused.reason
    assert isinstance(decide("1.2.0", "1.1.0", catalog), Install)


def test_archive_without_signed_policy_is_refused_fail_closed() -> None:
    bare = TargetInfo("r4agent-1.1.0.tar.gz", 10, {"sha256": "x"}, None)
    garbled = TargetInfo("r4agent-1.2.0.tar.gz", 10, {"sha256": "y"},
                         {"user": {"revoked": "no"}})
    catalog = build_catalog([_archive("1.0.0"), bare, garbled])
    assert isinstance(decide("1.0.0", "1.1.0", catalog), Refuse)
    assert isinstance(decide("1.0.0", "1.2.0", catalog), Refuse)
    assert len(catalog.problems) == 2


def test_target_names_with_traversal_never_become_releases() -> None:
    catalog = build_catalog([TargetInfo("r4agent-../1.0.0.tar.gz", 1, {"sha256": "x"},
                                        {"user": {"revoked": False}})])
    assert catalog.releases == {}


def test_forward_move_uses_the_complete_patch_chain() -> None:
    decision = decide("1.0.0", "1.2.0", CATALOG, running_tar_cached=True)
    assert isinstance(decision, Install) and isinstance(decision.route, PatchRoute)
    assert [str(p.version) for p in decision.route.patches] == ["1.1.0", "1.2.0"]


def test_forward_move_without_the_cached_base_uses_the_full_archive() -> None:
    decision = decide("1.0.0", "1.1.0", CATALOG, running_tar_cached=False)
    assert isinstance(decision, Install) and isinstance(decision.route, FullRoute)


def test_patch_chain_bigger_than_the_archive_ratio_uses_the_full_archive() -> None:
    catalog = build_catalog([_archive("1.0.0"), _archive("1.1.0", length=100), _patch("1.1.0", 90)])
    decision = decide("1.0.0", "1.1.0", catalog, running_tar_cached=True)
    assert isinstance(decision, Install) and isinstance(decision.route, FullRoute)


def test_chain_with_a_missing_patch_uses_the_full_archive() -> None:
    catalog = build_catalog([_archive("1.0.0"), _archive("1.1.0"), _archive("1.2.0"),
                             _patch("1.2.0")])
    decision = decide("1.0.0", "1.2.0", catalog, running_tar_cached=True)
    assert isinstance(decision, Install) and isinstance(decision.route, FullRoute)


def test_downgrade_always_uses_the_full_archive() -> None:
    decision = decide("1.2.0", "1.0.0", CATALOG, running_tar_cached=True)
    assert isinstance(decision, Install) and isinstance(decision.route, FullRoute)
    assert decision.reason.startswith("downgrade")


def test_quarantined_build_is_not_reinstalled_but_a_rebuilt_one_is() -> None:
    refused = decide("1.0.0", "1.1.0", CATALOG, quarantined={"1.1.0": "ar4agent1.1.0"})
    assert isinstance(refused, Refuse) and "rolled back here" in refused.reason
    assert isinstance(decide("1.0.0", "1.1.0", CATALOG, quarantined={"1.1.0": "old"}), Install)


def test_unreadable_archive_policy_refuses_downgrades_but_not_upgrades() -> None:
    # the unreadable archive may carry a higher floor than the readable ones: fail closed
    hidden_floor = TargetInfo("r4agent-1.3.0.tar.gz", 10, {"sha256": "z"},
                              {"user": {"revoked": False, "floor": "1.2"}})
    catalog = build_catalog([_archive("1.0.0"), _archive("1.1.0"), _archive("1.2.0"),
                             hidden_floor])
    assert catalog.archive_problems and catalog.effective_floor is None
    down = decide("1.2.0", "1.0.0", catalog)
    assert isinstance(down, Refuse) and "floor is unknown" in down.reason
    assert isinstance(decide("1.0.0", "1.1.0", catalog), Install)
    # a malformed patch says nothing about floors: downgrades stay possible
    bad_patch = TargetInfo("r4agent-1.2.0.patch", 10, {"sha256": "p"}, {"user": None})
    patched = build_catalog([_archive("1.0.0"), _archive("1.2.0"), bad_patch])
    assert patched.problems and not patched.archive_problems
    assert isinstance(decide("1.2.0", "1.0.0", patched), Install)


# ---- platforms -------------------------------------------------------------------------------

WIN_APP, LINUX_APP = target_apps(WINDOWS)[0], target_apps(LINUX)[0]


def test_an_agent_never_sees_another_platforms_build() -> None:
    targets = [_archive("1.0.0", app=WIN_APP), _archive("1.1.0", app=LINUX_APP),
               _archive("1.0.0", app=APP_NAME)]
    linux = build_catalog(targets, target_apps(LINUX))
    windows = build_catalog(targets, target_apps(WINDOWS))
    assert [str(v) for v in linux.releases] == ["1.1.0"]
    assert sorted(str(v) for v in windows.releases) == ["1.0.0"]
    assert isinstance(decide("1.0.0", "1.1.0", windows), Refuse)  # a Linux build, not listed


def test_a_windows_agent_prefers_its_platform_name_and_falls_back_to_the_plain_names() -> None:
    targets = [_archive("1.0.0", app=APP_NAME), _archive("1.1.0", app=APP_NAME),
               _patch("1.1.0", app=APP_NAME), _archive("1.1.0", app=WIN_APP),
               _patch("1.1.0", app=WIN_APP)]
    catalog = build_catalog(targets, target_apps(WINDOWS))
    assert catalog.releases[parse_version("1.1.0")].archive.path == f"{WIN_APP}-1.1.0.tar.gz"
    assert catalog.patches[parse_version("1.1.0")].artifact.path == f"{WIN_APP}-1.1.0.patch"
    assert catalog.releases[parse_version("1.0.0")].archive.path == "r4agent-1.0.0.tar.gz"


def test_agents_built_before_platform_names_ignore_them_instead_of_refusing_downgrades() -> None:
    # what those agents read (the plain names only) with a platform name beside them
    old_view = build_catalog([_archive("1.0.0"), _archive("1.1.0", app=WIN_APP)], APP_NAME)
    assert not old_view.problems and not old_view.archive_problems
    # the hyphenated spelling would read to them as an archive with an unreadable version,
    # which makes them refuse every downgrade (its floor is unknown)
    hyphen = build_catalog([_archive("1.0.0"), _archive("win-amd64-1.1.0")], APP_NAME)
    assert hyphen.archive_problems
    assert isinstance(decide("1.1.0", "1.0.0", hyphen), Refuse)


@pytest.mark.parametrize(("build", "tag"), [
    ("win-amd64", WINDOWS), ("linux-x86_64", LINUX), ("linux-aarch64", "linux-aarch64"),
    ("win-arm64", "win-arm64"),
])
def test_the_host_platform_tag(build: str, tag: str) -> None:
    assert host_platform(build) == tag
