import pytest

from pylima.config.units import format_size, parse_size

GiB = 1 << 30


@pytest.mark.parametrize("text,expected", [
    ("4GiB", 4 * GiB), ("4G", 4 * GiB), ("4g", 4 * GiB), ("4GB", 4 * GiB), ("100GiB", 100 * GiB),
    ("512MiB", 512 << 20), ("1.5GiB", int(1.5 * GiB)), ("1024", 1024), (" 2 GiB ", 2 * GiB),
    (4096, 4096), ("128KiB", 128 << 10), ("1TiB", 1 << 40),
])
def test_parse_size_accepts_lima_forms(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "four", "4XB", "-1G", "4 G B", True])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("size,text", [
    (4 * GiB, "4GiB"), (100 * GiB, "100GiB"), (int(1.5 * GiB), "1.5GiB"), (0, "0B"),
    (512 << 20, "512MiB"), (1023, "1023B"), (12 * GiB, "12GiB"),
])
def test_format_size_like_go_units(size, text):
    assert format_size(size) == text
