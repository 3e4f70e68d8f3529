"""A hub's push feed: opened once on its first watch, run as one task on the hub's loop, told of
watches as they come and go, cancelled when the hub closes. The hub itself is the feed's sink."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._types import Feed, FeedSink, TaskRef

__all__ = ["FeedLink"]

logger = logging.getLogger("reactive_tasks")


class FeedLink:
    """The bookkeeping between one hub and its source's feed (if the source has one)."""

    def __init__(self, source: Any, loop: asyncio.AbstractEventLoop, sink: FeedSink) -> None:
        self._source = source
        self._loop = loop
        self._sink = sink
        self._opened = False
        self._closed = False
        self._feed: Feed | None = None
        self._task: asyncio.Task[None] | None = None

    def watch(self, ref: TaskRef) -> None:
        """A watch of ``ref`` started; the first one opens the feed."""
        if not self._opened and not self._closed:
            self._open()
        if self._feed is not None:
            self._tell("watch", self._feed.watch, ref)

    def unwatch(self, ref: TaskRef) -> None:
        """The watch of ``ref`` ended (disposal, completion or error)."""
        if self._feed is not None:
            self._tell("unwatch", self._feed.unwatch, ref)

    async def aclose(self) -> None:
        """Cancel the feed's task and wait for it to unwind."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _open(self) -> None:
        self._opened = True
        open_feed = getattr(self._source, "open_feed", None)  # plain sources poll only
        feed = open_feed() if open_feed is not None else None
        if feed is None:
            return
        self._feed = feed
        self._task = self._loop.create_task(feed.run(self._sink))
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A feed is meant to run until cancelled; if it stops anyway, polling takes over."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error(
                "%s: the push feed stopped with %s; polling at the normal interval",
                getattr(self._source, "name", "?"), type(error).__name__,
                exc_info=(type(error), error, error.__traceback__),
            )
        self._feed = None
        self._sink.feed_live(False)

    def _tell(self, what: str, call: Any, ref: TaskRef) -> None:
        """Pass on a watch change; a feed that raises here only loses push for that task."""
        try:
            call(ref)
        except Exception as exc:
            logger.error(
                "%s: the push feed's %s raised %s", getattr(self._source, "name", "?"), what,
                type(exc).__name__, exc_info=True,
            )
