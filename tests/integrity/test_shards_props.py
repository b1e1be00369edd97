"""Property tests of the OMS shard parser and layout check (assay.integrity._shards).

* any shard name assay writes parses back to the same shard (paths may hold colons);
* the splitter tiles any file exactly, and its layout passes the check with the file's size;
* dropping, merging or moving any boundary of a valid layout is refused;
* any text at all either parses as a shard or raises IntegrityError (exit 3) with one line.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from assay.core.errors import IntegrityError
from assay.integrity._shards import Shard, check_shard_layout, parse_shard_name, shard_bounds

_paths = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
)
_sizes = st.integers(1, 10**7)
_shard_sizes = st.integers(1, 10**6)


@given(_paths, st.integers(0, 2**50), st.integers(1, 2**40))
def test_names_round_trip(path, start, length):
    shard = Shard(path, start, start + length)
    assert parse_shard_name(shard.name) == shard


@given(_sizes, _shard_sizes)
def test_splitter_tiles_and_passes_the_check(size, shard_size):
    if -(-size // shard_size) > 5000:
        shard_size = -(-size // 5000)
    bounds = list(shard_bounds(size, shard_size))
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(0 < e - s <= shard_size for s, e in bounds)
    shards = [Shard("f", s, e) for s, e in bounds]
    assert check_shard_layout(reversed(shards), shard_size) == {"f": size}


@given(_sizes, _shard_sizes, st.data())
def test_any_broken_layout_is_refused(size, shard_size, data):
    if -(-size // shard_size) > 5000:
        shard_size = -(-size // 5000)
    bounds = list(shard_bounds(size, shard_size))
    how = data.draw(st.sampled_from(["drop", "merge", "move"]))
    i = data.draw(st.integers(0, len(bounds) - 1))
    if how == "drop" and len(bounds) > 1:
        del bounds[i]
    elif how == "merge" and i + 1 < len(bounds):
        bounds[i : i + 2] = [(bounds[i][0], bounds[i + 1][1])]
    else:
        s, e = bounds[i]
        delta = data.draw(st.integers(1, 1000))
        bounds[i] = (s, e + delta)
        if i + 1 < len(bounds):
            bounds[i + 1] = (e + delta, bounds[i + 1][1])
    try:
        got = check_shard_layout([Shard("f", s, e) for s, e in bounds if e > s], shard_size)
    except IntegrityError as exc:
        assert "\n" not in str(exc)
        return
    # only a change that is itself a valid split of another size may pass
    assert got["f"] != size or bounds == list(shard_bounds(size, shard_size))
    assert bounds == list(shard_bounds(got["f"], shard_size))


@given(st.text(max_size=60))
def test_any_text_parses_or_fails_cleanly(text):
    try:
        shard = parse_shard_name(text)
    except IntegrityError as exc:
        assert "\n" not in str(exc)
        assert exc.exit_code == 3
        return
    assert shard.name == text
    assert 0 <= shard.start < shard.end
