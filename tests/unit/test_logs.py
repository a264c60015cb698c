"""Log records go through a bounded queue to a writer thread; what a full queue drops is said."""

from __future__ import annotations

import io
import logging
import queue

import orjson

from proxy.logs import JsonFormatter, _QueueHandler, _StderrHandler


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
