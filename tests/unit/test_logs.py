"""Log records go through a bounded queue to a writer thread; what a full queue drops is said."""

from __future__ import annotations

import io
import logging
import queue
import threading

import orjson

from proxy.logs import JsonFormatter, _BoundedQueue, _QueueHandler, _StderrHandler


def test_a_full_queue_drops_records_and_the_next_line_says_how_many():
    records: queue.Queue[logging.LogRecord] = queue.Queue(2)
    source = _QueueHandler(records)
    logger = logging.getLogger("test.logs.queue")
    logger.propagate = False
    logger.addHandler(source)
    try:
        for n in range(5):
            logger.warning("line %d", n, extra={"fields": {"n": n}})
    finally:
        logger.removeHandler(source)
    assert source.dropped == 3 and records.qsize() == 2

    writer = _StderrHandler(source)
    writer.setStream(io.StringIO())
    writer.setFormatter(JsonFormatter())
    while not records.empty():
        writer.handle(records.get_nowait())
    lines = [orjson.loads(line) for line in writer.stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == [
        "log records dropped: the log stream was not read fast enough",
        "line 0",
        "line 1",
    ]
    assert lines[0]["count"] == 3 and lines[0]["level"] == "warning" and lines[2]["n"] == 1


def test_the_writers_queue_holds_at_most_its_bound_whichever_threads_log():
    records = _BoundedQueue(50)
    source = _QueueHandler(records)
    logger = logging.getLogger("test.logs.bounded")
    logger.propagate = False
    logger.addHandler(source)
    try:
        threads = [threading.Thread(target=lambda: [logger.warning("x") for _ in range(40)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logger.removeHandler(source)
    assert records.qsize() == 50 and source.dropped == 4 * 40 - 50
    assert all(records.get(True, 1).getMessage() == "x" for _ in range(50))  # as the writer thread reads it
    assert records.empty()
