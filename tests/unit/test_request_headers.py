"""The HTTP server's header reader (greenjobs.server.httpserver.read_headers): what pywsgi and the framing check
ask of it, and what it refuses."""
import io

import pytest

from greenjobs.server.httpserver import MAX_FIELDS, check_framing, read_headers


def read(raw: bytes, max_bytes: int = 65536):
    return read_headers(io.BufferedReader(io.BytesIO(raw)), max_bytes)


def test_fields_by_name_in_any_case_first_value_and_all_values():
    h = read(b"Host: x\r\nContent-Type:  application/json \r\nX-A: 1\r\nx-a: 2\r\n\r\nbody")
    assert h.get("content-type") == h.getheader("CONTENT-TYPE") == h.typeheader == "application/json"
    assert h.get("X-A") == "1" and h.get_all("x-A") == ["1", "2"]
    assert h.get("missing", "d") == "d" and h.get_all("missing") is None
    assert h.headers == ["Host: x\r\n", "Content-Type: application/json\r\n", "X-A: 1\r\n", "x-a: 2\r\n"]
    assert h.status == ""


def test_reading_stops_at_the_blank_line_and_leaves_the_body():
    rfile = io.BufferedReader(io.BytesIO(b"A: 1\r\n\r\n{\"x\": 1}"))
    assert read_headers(rfile, 1000).get("a") == "1"
    assert rfile.read() == b'{"x": 1}'


def test_delete_removes_every_field_of_that_name():
    h = read(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n")
    del h["CONTENT-LENGTH"]
    del h["not-there"]
    assert h.get("content-length") is None and h.headers == ["Transfer-Encoding: chunked\r\n"]


def test_latin1_values_decode_as_http_client_does():
    assert read(b"X-Name: caf\xe9\r\n\r\n").get("x-name") == "caf\u00e9"


def test_tabs_inside_a_value_stay_and_around_it_go():
    assert read(b"X-A: \ta\tb \r\n\r\n").get("x-a") == "a\tb"


@pytest.mark.parametrize("raw, why", [
    (b"X: a\r\n folded\r\n\r\n", "malformed"),
    (b"X\t: a\r\n\r\n", "malformed"),
    (b"Content-Length : 5\r\n\r\n", "malformed"),
    (b"no colon\r\n\r\n", "malformed"),
    (b": empty name\r\n\r\n", "malformed"),
    (b"X-A: a\rTransfer-Encoding: chunked\r\n\r\n", "malformed"),       # a bare CR: another field to some
    (b"X-A: a\x00b\r\n\r\n", "malformed"),
    (b"X-A: a\r\r\n\r\n", "malformed"),
    (b"Host: x\nTransfer-Encoding: chunked\r\n\r\n", "bare LF"),     # two fields to some parsers, one to others
    (b"Host: x\r\n\n", "bare LF"),
    (b"Host: x\r\nContent-Length: 0", "cut short"),                  # the stream ends inside the block
    (b"Host: x\r\n", "cut short"),
    (b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS + 1)) + b"\r\n", "more than 100"),
    (b"X: " + b"v" * 200 + b"\r\n\r\n", "exceed 100 bytes"),
])
def test_refused(raw, why):
    with pytest.raises(ValueError, match=why):
        read(raw, max_bytes=100 if b"v" * 200 in raw else 65536)


def test_exactly_the_limits_pass():
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS))
    assert len(read(fields + b"\r\n", max_bytes=len(fields)).headers) == MAX_FIELDS


@pytest.mark.parametrize("raw, why", [
    (b"Transfer-Encoding: chunked\xa0\r\n\r\n", "only Transfer-Encoding"),   # str.strip() would drop \xa0
    (b"Content-Length: 3\xa0\r\n\r\n", "not a number"),
    (b"Content-Length: \x853\r\n\r\n", "not a number"),
])
def test_framing_values_are_judged_as_read(raw, why):
    with pytest.raises(ValueError, match=why):
        check_framing(read(raw))


def test_framing_check_reads_every_content_length():
    with pytest.raises(ValueError, match="more than one Content-Length"):
        check_framing(read(b"Content-Length: 1\r\ncontent-length: 1\r\n\r\n"))
    check_framing(read(b"Content-Length: 1\r\n\r\n"))
