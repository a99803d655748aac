"""The SSE decoder: whole events whatever the chunking, CRLF folded, comments dropped."""

from __future__ import annotations

import pytest

from gateway.upstream.sse import DONE, Event, EventDecoder, encode

STREAM = (b'data: {"n": 1}\n\n'
          b": keep-alive\n\n"
          b'event: message\nid: 7\ndata: {"n": 2}\n\n'
          b"data: line one\ndata: line two\n\n"
          b"data: [DONE]\n\n")
EXPECTED = [
    (b'data: {"n": 1}', b'{"n": 1}'),
    (b'event: message\nid: 7\ndata: {"n": 2}', b'{"n": 2}'),
    (b"data: line one\ndata: line two", b"line one\nline two"),
    (b"data: [DONE]", b"[DONE]"),
]


def decode(chunks: list[bytes]) -> tuple[list[tuple[bytes, bytes]], EventDecoder]:
    decoder = EventDecoder()
    events = [(e.raw, e.data) for chunk in chunks for e in decoder.feed(chunk)]
    return events, decoder


def test_a_whole_stream_in_one_chunk_gives_every_event() -> None:
    events, decoder = decode([STREAM])
    assert events == EXPECTED
    assert decoder.pending == b""


def test_feeding_byte_by_byte_gives_the_same_events() -> None:
    events, decoder = decode([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert events == EXPECTED
    assert decoder.pending == b""


def test_every_split_point_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        events, decoder = decode([STREAM[:cut], STREAM[cut:]])
        assert events == EXPECTED, cut
        assert decoder.pending == b"", cut


def test_an_event_is_returned_only_once_its_blank_line_arrives() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [Event(b"data: a", b"a")]


def test_crlf_line_endings_are_folded_to_lf() -> None:
    events, decoder = decode([b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"])
    assert events == [(b"data: a\ndata: b", b"a\nb"), (b"data: c", b"c")]
    assert decoder.pending == b""


def test_crlf_split_between_chunks_is_still_folded() -> None:
    whole = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for cut in range(len(whole) + 1):
        events, decoder = decode([whole[:cut], whole[cut:]])
        assert events == [(b"data: a", b"a"), (b"data: b", b"b")], cut
    events, _ = decode([whole[i:i + 1] for i in range(len(whole))])
    assert events == [(b"data: a", b"a"), (b"data: b", b"b")]


def test_comment_only_events_are_ignored() -> None:
    events, decoder = decode([b": ping\n\n:\n\n: one\n: two\n\n"])
    assert events == []
    assert decoder.pending == b""


def test_events_without_a_data_field_are_ignored() -> None:
    events, _ = decode([b"event: ping\nid: 3\nretry: 1000\n\n"])
    assert events == []


def test_a_comment_inside_an_event_is_kept_in_raw_but_not_in_data() -> None:
    events, _ = decode([b": note\ndata: x\n\n"])
    assert events == [(b": note\ndata: x", b"x")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    events, _ = decode([b"data: {\ndata:   \"a\": 1\ndata: }\n\n"])
    assert events == [(b"data: {\ndata:   \"a\": 1\ndata: }", b'{\n  "a": 1\n}')]


@pytest.mark.parametrize(("line", "data"), [
    (b"data:x", b"x"),            # no space after the colon
    (b"data: x", b"x"),           # exactly one leading space is dropped
    (b"data:  x", b" x"),         # a second one is part of the value
    (b"data: ", b""),             # an empty value
    (b"data:", b""),
])
def test_only_one_space_after_the_colon_is_dropped(line: bytes, data: bytes) -> None:
    assert EventDecoder().feed(line + b"\n\n") == [Event(line, data)]


def test_an_unterminated_event_is_pending() -> None:
    decoder = EventDecoder()
    events = decoder.feed(b'data: {"n": 1}\n\ndata: {"n": 2')
    assert events == [Event(b'data: {"n": 1}', b'{"n": 1}')]
    assert decoder.pending == b'data: {"n": 2'


def test_a_single_trailing_newline_is_still_pending() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.pending == b"data: x"


def test_nothing_is_pending_after_only_blank_lines() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b"\n\n\n\n") == []
    assert decoder.pending == b""


def test_done_is_recognised_only_for_the_exact_done_marker() -> None:
    assert Event(b"data: [DONE]", DONE).is_done is True
    events, _ = decode([b"data: [DONE]\n\n", b"data: [DONE] \n\n", b'data: "[DONE]"\n\n',
                        b"data: [done]\n\n"])
    assert events == [(b"data: [DONE]", b"[DONE]"), (b"data: [DONE] ", b"[DONE] "),
                      (b'data: "[DONE]"', b'"[DONE]"'), (b"data: [done]", b"[done]")]
    decoder = EventDecoder()
    done = [e.is_done for e in decoder.feed(b"data: [DONE]\n\ndata: [DONE] \n\ndata: x\n\n")]
    assert done == [True, False, False]


def test_raw_bytes_are_kept_as_received_apart_from_crlf() -> None:
    body = b'data: {"a":1,  "b" : [1, 2]}'
    assert EventDecoder().feed(body + b"\r\n\r\n") == [Event(body, b'{"a":1,  "b" : [1, 2]}')]


def test_encode_writes_a_data_event_that_decodes_back() -> None:
    assert encode(b'{"x": 1}') == b'data: {"x": 1}\n\n'
    assert EventDecoder().feed(encode(b"[DONE]"))[0].is_done is True
