"""Fan-out of engine events and snapshots to any number of viewers.

A viewer that falls behind loses its oldest events (and learns how many), never
slows the engine: the queues are bounded and ``publish`` never awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from .snapshot import Event, Snapshot


class Subscription:
    """An async iterator over events; stop it with ``close()``."""

    def __init__(self, bus: EventBus, maxlen: int) -> None:
        self._bus = bus
        self._items: deque[Event] = deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _push(self, event: Event) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._bus._subs.discard(self)
        self._ready.set()

    def drain(self) -> list[Event]:
        """What is queued now, without waiting."""
        items = list(self._items)
        self._items.clear()
        self._ready.clear()
        return items

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


SnapshotListener = Callable[[Snapshot], None]
EventListener = Callable[[Event], None]


RECENT_EVENTS = 200  # replayed to a viewer that subscribes late (an attached console)


class EventBus:
    def __init__(self, recent: int = RECENT_EVENTS) -> None:
        self._subs: set[Subscription] = set()
        self._listeners: list[SnapshotListener] = []
        self._event_listeners: list[EventListener] = []
        self._recent: deque[Event] = deque(maxlen=recent)

    def subscribe(self, maxlen: int = 1000, *, replay: bool = True) -> Subscription:
        """A new subscription; it starts with the recent events unless ``replay`` is off."""
        sub = Subscription(self, maxlen)
        if replay:
            for event in self._recent:
                sub._push(event)
        self._subs.add(sub)
        return sub

    def publish(self, event: Event) -> None:
        self._recent.append(event)
        for sub in tuple(self._subs):
            sub._push(event)
        for listener in tuple(self._event_listeners):
            listener(event)

    def add_event_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` with every event as it is published (never dropped, never
        replayed; it must not block); returns the remover."""
        self._event_listeners.append(listener)
        return lambda: (self._event_listeners.remove(listener)
                        if listener in self._event_listeners else None)

    def add_listener(self, listener: SnapshotListener) -> Callable[[], None]:
        """Call ``listener`` with each published snapshot; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def publish_snapshot(self, snapshot: Snapshot) -> None:
        for listener in tuple(self._listeners):
            listener(snapshot)

    def close(self) -> None:
        for sub in tuple(self._subs):
            sub.close()
