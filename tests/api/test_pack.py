"""The batch stream format: any split of the bytes decodes to the same frames; hostile packs are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrepo.store import InvalidInput, pack
from mrepo.store.pack import frame_header

KEYS = st.one_of(st.text("0123456789abcdef", min_size=62, max_size=62).map(lambda t: f"objects/ab/{t}"),
                 st.sampled_from([f"arrays/{'e' * 64}/zarr.json", f"arrays/{'e' * 64}/c/0/12/3"]))


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.tuples(KEYS, st.binary(max_size=3000)), max_size=8), cuts=st.lists(st.integers(1, 5000)))
def test_any_split_decodes_to_the_same_frames(frames, cuts) -> None:
    data = b"".join(pack.encode(frames))
    pieces, i = [], 0
    for c in cuts:
        pieces.append(data[i:i + c])
        i += c
    pieces.append(data[i:])
    assert list(pack.decode(pieces, 1 << 20)) == frames


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.tuples(KEYS, st.binary(max_size=3000)), max_size=8), cuts=st.lists(st.integers(1, 5000)),
       kinds=st.lists(st.sampled_from(["bytes", "bytearray", "view"]), min_size=1))
def test_pieces_of_any_kind_decode_and_mutable_ones_are_not_kept(frames, cuts, kinds) -> None:
    """Views of immutable pieces are kept until a frame completes; a bytearray piece is copied (the
    caller may reuse it: here it is overwritten right after each feed)."""
    assert _fed(pack.PackReader(1 << 20), b"".join(pack.encode(frames)), cuts, kinds) == frames


def _fed(reader: pack.PackReader, data: bytes, cuts: list[int], kinds: list[str]) -> list:
    """The frames ``reader`` returns for ``data`` cut at ``cuts``, each piece of the kind ``kinds`` gives in
    turn; a bytearray piece is overwritten right after it is fed (the caller may reuse its buffer)."""
    got, i = [], 0
    for n, c in enumerate([*cuts, len(data)]):
        piece, i = data[i:i + c], i + c
        kind = kinds[n % len(kinds)]
        if kind == "bytearray":
            buf = bytearray(piece)
            got += reader.feed(buf)
            buf[:] = b"\xff" * len(buf)
        else:
            got += reader.feed(memoryview(piece) if kind == "view" else piece)
    reader.finish()
    return got


@pytest.mark.parametrize("body, message", [
    (b"NOTPK1\n", "bad magic"),
    (pack.MAGIC + frame_header("objects/../../etc/passwd", 1) + b"x" + pack.END, "invalid key"),
    (pack.MAGIC + frame_header(f"arrays/{'e' * 64}/../../refs/heads/x", 1) + b"x" + pack.END, "invalid key"),
    (pack.MAGIC + frame_header("objects/ab/" + "c" * 62, 1 << 40), "larger than the limit"),
    (pack.MAGIC + frame_header("objects/ab/" + "c" * 62, 5) + b"abc", "truncated"),
    (pack.MAGIC + pack.END + b"more", "after its end frame"),
])
def test_hostile_packs_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        list(pack.decode([body], 1 << 20))


@settings(max_examples=80, deadline=None)
@given(frames=st.lists(st.tuples(KEYS, st.binary(max_size=3000)), max_size=8), cuts=st.lists(st.integers(1, 5000)),
       kinds=st.lists(st.sampled_from(["bytes", "bytearray", "view"]), min_size=1),
       join_from=st.sampled_from([1, 64, 1000]))
def test_frames_kept_in_pieces_hold_the_same_bytes(frames, cuts, kinds, join_from) -> None:
    """With ``join_from``, frames of that size or more come out as FramePieces (never joined by the
    reader), smaller ones as bytes; either way the data is the frame's, also after the caller
    overwrote a mutable piece, and ``copy_into`` writes exactly it."""
    import numpy as np

    got = _fed(pack.PackReader(1 << 20, join_from=join_from), b"".join(pack.encode(frames)), cuts, kinds)
    assert [k for k, _ in got] == [k for k, _ in frames]
    for (_, expected), (_, out) in zip(frames, got):
        if isinstance(out, pack.FramePieces):
            assert len(out) == len(expected) >= join_from
            assert bytes(out) == expected
            block = np.full(len(out), 0xEE, dtype=np.uint8)
            out.copy_into(block)
            assert block.tobytes() == expected
        else:
            assert type(out) is bytes and out == expected


def test_a_large_frame_across_pieces_is_never_joined_by_the_reader() -> None:
    """A frame of ``join_from`` bytes or more that spans immutable pieces comes out as views of them."""
    payload = bytes(range(256)) * 40
    data = b"".join(pack.encode([("objects/ab/" + "c" * 62, b"x"), (f"arrays/{'e' * 64}/c/0", payload)]))
    first = len(pack.MAGIC) + len(frame_header("objects/ab/" + "c" * 62, 1)) + 1  # magic and the small frame
    pieces = [data[:first], data[first:5000], data[5000:]]
    reader = pack.PackReader(1 << 20, join_from=1024)
    got = [f for p in pieces for f in reader.feed(p)]
    reader.finish()
    assert got[0] == ("objects/ab/" + "c" * 62, b"x")  # small: bytes
    key, out = got[1]
    assert isinstance(out, pack.FramePieces) and len(out.parts) == 2 and bytes(out) == payload
    assert [p.obj for p in out.parts] == pieces[1:] and all(isinstance(p, memoryview) for p in out.parts)
