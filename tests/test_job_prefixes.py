"""Which input-bucket prefixes a batch job may name: whole segments, never a service area."""

from __future__ import annotations

import pytest

from runtime import keys
from runtime.settings import ConfigError, Settings


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("albums", "albums/"),
        ("albums/", "albums/"),
        ("albums/2024", "albums/2024/"),
        ("my photos/2024/", "my photos/2024/"),
        ("jobsite", "jobsite/"),  # a name that merely starts like a service area is fine
    ],
)
def test_a_source_prefix_is_whole_segments_ending_in_a_slash(raw, normalised):
    assert keys.source_prefix(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        "/albums",
        "albums//2024",
        "albums/../uploads",
        "./albums",
        "albums/.",
        "..",
        "albums\\2024",
        "albums\n",
        "al\x00bums",
        "a" * 1025,
        *(area for area in keys.SERVICE_AREAS),  # uploads/, jobs/, ...
        *(area.rstrip("/") for area in keys.SERVICE_AREAS),
        "jobs/" + "f" * 32 + "/in",
        "Jobs",
        " jobs",
        "ｊｏｂｓ",  # full-width: NFKC folds it to "jobs"
        "uploads/x",
        7,
        None,
    ],
)
def test_a_source_prefix_refuses_service_areas_and_odd_spellings(raw):
    with pytest.raises(keys.PrefixError):
        keys.source_prefix(raw)


def test_under_compares_whole_segments():
    allowed = ("albums/", "shared/team/")
    assert keys.is_under("albums/2024/cat.jpg", allowed)
    assert keys.is_under("shared/team/x.jpg", allowed)
    for key in ("albums2/cat.jpg", "albums", "shared/teams/x.jpg", "albums//x", "albums/../x"):
        assert not keys.is_under(key, allowed), key
    assert not keys.is_under("albums/x.jpg", ())


def test_job_prefixes_setting_is_off_by_default_and_checked_at_start():
    assert Settings().job_source_prefixes == ()
    settings = Settings.from_env({"JOB_PREFIXES": "albums, shared/team/"})
    assert settings.job_source_prefixes == ("albums/", "shared/team/")
    for bad in ("jobs", "albums,uploads/", "a/../b", "j,,k"):
        with pytest.raises(ConfigError, match="JOB_PREFIXES"):
            Settings.from_env({"JOB_PREFIXES": bad})
