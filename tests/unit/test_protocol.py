"""The pipe protocol: framing survives partial reads, every message round-trips."""

from __future__ import annotations

import pytest

from kongtaskd import protocol
from kongtaskd.protocol import Kind


def roundtrip(frames: list[bytes], chunk: int) -> list[protocol.Message]:
    parent, child = protocol.channel_pair()
    try:
        data = b"".join(frames)
        received: list[protocol.Message] = []
        for start in range(0, len(data), chunk):  # deliver in awkward pieces
            child.sock.sendall(data[start : start + chunk])
            parent.feed()
            received.extend(parent.messages())
        return received
    finally:
        parent.close()
        child.close()


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096])
def test_every_message_round_trips_through_partial_reads(chunk: int):
    frames = [
        protocol.encode_run(2**40 + 7),
        protocol.encode_stop(),
        protocol.encode_ready(1234, ["a", "b/c"]),
        protocol.encode_fatal("cannot import module 'x': ImportError: boom"),
        protocol.encode_done(42, 0.125),
        protocol.encode_failed(43, 1.5, "ValueError: ünïcode\n\nTraceback ..."),
        protocol.encode_skipped(44, "gone"),
        protocol.encode_bye("recycled after 10 jobs"),
        protocol.encode_run(1, 2, 3),
        protocol.encode_returned([8, 9]),
    ]
    got = roundtrip(frames, chunk)
    assert [m.kind for m in got] == [
        Kind.RUN,
        Kind.STOP,
        Kind.READY,
        Kind.FATAL,
        Kind.DONE,
        Kind.FAILED,
        Kind.SKIPPED,
        Kind.BYE,
        Kind.RUN,
        Kind.RETURNED,
    ]
    assert got[0].job_id == 2**40 + 7
    assert got[2].data == {"pid": 1234, "tasks": ["a", "b/c"]}
    assert got[3].data == {"error": "cannot import module 'x': ImportError: boom", "kind": "import"}
    assert (got[4].job_id, got[4].seconds) == (42, 0.125)
    assert (got[5].job_id, got[5].seconds) == (43, 1.5)
    assert got[5].text == "ValueError: ünïcode\n\nTraceback ..."
    assert (got[6].job_id, got[6].text) == (44, "gone")
    assert got[7].text == "recycled after 10 jobs"
    assert got[8].job_ids == (1, 2, 3) and got[9].job_ids == (8, 9)


def test_receive_blocks_for_a_whole_frame_and_reports_end_of_stream():
    parent, child = protocol.channel_pair()
    frame = protocol.encode_run(5)
    parent.sock.sendall(frame[:3])
    parent.sock.sendall(frame[3:] + protocol.encode_stop())
    assert child.receive() == protocol.Message(Kind.RUN, job_id=5, job_ids=(5,))
    assert child.receive() == protocol.Message(Kind.STOP)
    parent.close()
    assert child.receive() is None
    child.close()


def test_drain_reads_what_a_dead_peer_left_behind():
    parent, child = protocol.channel_pair()
    child.sock.sendall(protocol.encode_done(9, 0.5) + protocol.encode_failed(10, 0.1, "x"))
    child.close()
    parent.sock.setblocking(False)
    parent.drain()
    assert [m.job_id for m in parent.messages()] == [9, 10]
    assert parent.closed
    parent.close()


def test_unknown_kind_is_a_protocol_error():
    parent, child = protocol.channel_pair()
    child.sock.sendall(b"\x00\x00\x00\x01\x63")
    parent.feed()
    with pytest.raises(protocol.ProtocolError, match="unknown message kind 99"):
        list(parent.messages())
    parent.close()
    child.close()


def test_peek_sees_a_waiting_message_without_blocking_or_consuming_it():
    parent, child = protocol.channel_pair()
    assert child.peek() is None  # nothing there: returns at once
    parent.send(protocol.encode_stop())
    assert child.peek() == protocol.Message(Kind.STOP)
    assert child.receive() == protocol.Message(Kind.STOP)  # still there
    parent.close()
    child.close()


def test_unread_lists_what_a_dead_peer_sent_and_leaves_it_in_place():
    supervisor, child = protocol.channel_pair()
    try:
        supervisor.send(protocol.encode_run(1, 2))
        supervisor.send(protocol.encode_run(3))
        supervisor.send(protocol.encode_stop() + protocol.encode_run(4)[:5])  # then a partial
        supervisor.close()  # the supervisor dies with all that unread
        assert [m.job_ids for m in child.unread()] == [(1, 2), (3,), ()]
        # Still there for receive(), in order: unread() consumed nothing.
        assert child.receive().job_ids == (1, 2)
        assert child.receive().job_ids == (3,)
        assert child.receive().kind is Kind.STOP
        assert child.receive() is None  # the partial frame never completes: end of stream
    finally:
        child.close()


def test_wait_returns_for_a_buffered_frame_without_touching_the_socket():
    supervisor, child = protocol.channel_pair()
    try:
        supervisor.send(protocol.encode_run(5) + protocol.encode_run(6))
        child.wait()
        assert child.receive().job_ids == (5,)
        child.sock.setblocking(False)  # a second wait must not block on an empty socket
        child.wait()
        assert child.receive().job_ids == (6,)
    finally:
        supervisor.close()
        child.close()


def test_cancel_round_trips_and_take_leaves_the_other_messages_in_order():
    parent, child = protocol.channel_pair()
    try:
        parent.send(protocol.encode_run(5))
        parent.send(protocol.encode_cancel(7, 2.5, "cancelled by ops@h at 2026-12-01 09:00:00 UTC"))
        parent.send(protocol.encode_stop())
        parent.send(protocol.encode_cancel(8, 0.0, "cancelled by x"))
        parent.sock.sendall(protocol.encode_run(9)[:5])  # half a frame stays for later
        taken = child.take(Kind.CANCEL)
        assert [(m.job_id, m.seconds, m.text) for m in taken] == [
            (7, 2.5, "cancelled by ops@h at 2026-12-01 09:00:00 UTC"),
            (8, 0.0, "cancelled by x"),
        ]
        assert child.take(Kind.CANCEL) == []
        parent.sock.sendall(protocol.encode_run(9)[5:])
        assert child.receive() == protocol.Message(Kind.RUN, job_id=5, job_ids=(5,))
        assert child.receive() == protocol.Message(Kind.STOP)
        assert child.receive() == protocol.Message(Kind.RUN, job_id=9, job_ids=(9,))
    finally:
        parent.close()
        child.close()


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_run_with_rows_arrives_as_a_run_whose_rows_line_up_with_its_ids(chunk: int) -> None:
    rows = protocol.encode_run_rows([(7, b'[7, "x"]'), (8, None), (9, b""), (10, "é".encode())])
    plain = protocol.encode_run_rows([(11, None), (12, None)])
    assert plain == protocol.encode_run(11, 12)  # no row at all: the plain frame
    first, second = roundtrip([rows, plain], chunk)
    assert first.kind is Kind.RUN and first.job_ids == (7, 8, 9, 10) and first.job_id == 7
    assert first.rows == (b'[7, "x"]', None, b"", "é".encode())
    assert second.kind is Kind.RUN and second.job_ids == (11, 12) and second.rows == ()


def test_a_run_row_that_overruns_its_frame_is_a_protocol_error() -> None:
    frame = bytearray(protocol.encode_run_rows([(7, b"[7]")]))
    frame[4 + 1 + 8 + 3] = 200  # the row's size byte: far past the frame's end
    with pytest.raises(protocol.ProtocolError, match="job 7"):
        roundtrip([bytes(frame)], 4096)
