"""Decoding an upstream's gzip or deflate body a bounded piece at a time."""

from __future__ import annotations

import gzip
import zlib

import pytest

from proxy.forward.response import PIECE, _Inflater

TEXT = b'{"choices":[{"message":{"content":"' + b"hello world " * 40_000 + b'"}}]}'


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),  # RFC 1950, zlib-wrapped
        ("deflate", raw_deflate(TEXT)),  # what some servers send as deflate
        ("gzip", gzip.compress(TEXT[:1000]) + gzip.compress(TEXT[1000:])),  # two members
    ],
)
def test_every_encoding_decodes_in_pieces_of_at_most_64_kib_whatever_the_cut(encoding, body):
    for cut in (1, 1000, len(body)):
        inflater = _Inflater(encoding)
        pieces = [piece for at in range(0, len(body), cut) for piece in inflater.pieces(body[at : at + cut])]
        assert b"".join(pieces) == TEXT
        assert max(len(piece) for piece in pieces) <= PIECE


def test_a_malformed_body_raises_zlibs_error():
    with pytest.raises(zlib.error):
        list(_Inflater("gzip").pieces(b"\x1f\x8b not really gzip"))
