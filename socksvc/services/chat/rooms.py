"""
Rooms and what members do in them: join (move, or add a room: IRC), part,
say, act, the topic, who is in a room, the room list.

L{RoomActions} is the chat state's room half (L{socksvc.services.chat.state.ChatState}
derives from it): plain objects given a clock, no sockets. Actions make
events (L{socksvc.services.chat.events}) and hand them to delivery.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from socksvc.services.chat.cluster import Cluster
from socksvc.services.chat.delivery import Delivery, Member, Room
from socksvc.services.chat.events import (
    ACTION,
    SAY,
    Entered,
    Joined,
    Left,
    RoomList,
    RoomTopic,
    Roster,
    Said,
    Topic,
)
from socksvc.services.chat.sanitize import clip, name_key, room_check

REASON_MAX = 200
"""Characters of a /quit or part reason, or a topic."""


class RoomActions(Delivery):
    """The rooms of one chat service, and the actions members take in them."""

    settings: Any
    clock: IReactorTime
    rooms: dict[str, Room]
    room_looks: dict[str, Room]
    lines: int
    """Lines members said (a metrics counter; the state starts it)."""
    cluster: Cluster | None

    def add_room(self, room: Room) -> None:
        self.rooms[room.key] = room
        self.room_looks[room.look] = room

    def drop_room(self, room: Room) -> None:
        if self.rooms.get(room.key) is room:
            del self.rooms[room.key]
        if self.room_looks.get(room.look) is room:
            del self.room_looks[room.look]

    def first_room(self) -> Room:
        return self.rooms[name_key(self.settings.rooms[0])]

    def leave(self, m: Member, room: Room, announce: Left | None) -> None:
        """Take C{m} out of C{room} (telling the room C{announce})."""
        if m.key is None or not m.in_room(room):
            return
        self.settle(room)
        announce_it = announce is not None and self.announces(room)
        if room.members.get(m.key) is m:
            del room.members[m.key]
        m.drop_room(room)
        if announce is not None and announce_it:
            self.to_room(room, announce)
        if not room.members and not room.configured:
            self.drop_room(room)

    def announces(self, room: Room) -> bool:
        limit: int = self.settings.announce_max
        return limit == 0 or len(room.members) <= limit

    def find_room(self, name: str, create: bool = True) -> tuple[Room | None, str | None]:
        """
        The room called C{name} (created if allowed), or why not. Without
        C{create}, a room that may be created is returned but not added
        (with a bus, rooms are created when the join comes back).
        """
        if name.startswith("#"):
            name = name[1:]
        typed = name

        def taken(form: str, look: str) -> str | None:
            twin = self.room_looks.get(look)
            if twin is not None and name_key(form) not in self.rooms:
                return f'"{typed}" looks like "{twin.name}", which exists'
            return None

        name, problem = room_check(name, taken)
        if problem is not None:
            return None, f"bad room name: {problem}"
        key = name_key(name)
        room = self.rooms.get(key)
        if room is not None:
            return room, None
        problem = self.no_new_room(name)
        if problem is not None:
            return None, problem
        room = Room(name, self.settings.history, created=self.clock.seconds())
        if create:
            self.add_room(room)
        return room, None

    def no_new_room(self, name: str) -> str | None:
        """Why room C{name} (checked, not there) may not be made now; None if it may."""
        s = self.settings
        if not s.allow_create:
            return f"no such room: {name} (only the server's rooms can be joined; /rooms lists them)"
        if s.max_rooms and len(self.rooms) >= s.max_rooms:
            return f"too many rooms (at most {s.max_rooms}); join one of /rooms"
        return None

    def join(self, m: Member, name: str, stay: bool = False) -> None:
        """
        C{m} joins room C{name}: moves there (line and web clients), or, with
        C{stay} (IRC), adds it to the rooms it is in.
        """
        bus = self.cluster is not None and m.origin is None
        room, problem = self.find_room(name, create=not bus)
        if room is None:
            self.error(m, problem or "", "room", name)
            return
        if m.in_room(room):
            if not stay:
                self.error(m, f"you are already in {room.name}", "joined", room.name)
            return
        if self.cluster is not None and m.origin is None:
            self.cluster.join(m, room, stay)
            return
        self.apply_join(m, room, stay)

    def apply_join(self, m: Member, room: Room, stay: bool) -> None:
        if not stay and m.room is not None:
            self.leave(m, m.room, Left(m.room.name, m.nick or ""))
        self.join_room(m, room)

    def join_room(self, m: Member, room: Room) -> None:
        assert m.key is not None and m.nick is not None
        self.settle(room)
        room.members[m.key] = m
        m.add_room(room)
        live = self.announces(room)
        if live:
            self.to_room(room, Joined(room.name, m.nick), exclude=m)
        self.emit(m, Entered(room, len(room.members), tuple(room.history), live))

    def part(self, m: Member, room: Room, reason: str = "") -> None:
        """C{m} leaves C{room} and stays connected (an IRC PART): the room hears it, C{m} too."""
        if not m.in_room(room):
            return
        if self.cluster is not None and m.origin is None:
            self.cluster.part(m, room, clip(reason.strip(), REASON_MAX))
            return
        self.apply_part(m, room, reason)

    def apply_part(self, m: Member, room: Room, reason: str) -> None:
        if not m.in_room(room):
            return
        left = Left(room.name, m.nick or "", clip(reason.strip(), REASON_MAX))
        with self.batch():
            self.leave(m, room, left)
            self.emit(m, left)

    def say(self, m: Member, text: str, room: Room | None = None, kind: str = SAY) -> None:
        """C{m} says C{text} in C{room} (its current room by default)."""
        room = room or m.room
        if room is None or m.nick is None:
            return
        if self.cluster is not None and m.origin is None:
            self.cluster.say(m, room, text, kind)
            return
        self.apply_say(room, m.nick, text, kind, m)

    def apply_say(self, room: Room, nick: str, text: str, kind: str, sender: Member | None) -> None:
        said = Said(room.name, nick, text, kind)
        if sender is not None and sender.origin is None:  # with a bus, a line counts where it was said
            self.lines += 1
        if room.history.maxlen:
            room.history.append((self.clock.seconds(), said))
        self.to_room(room, said, exclude=sender)

    def action(self, m: Member, text: str, room: Room | None = None) -> None:
        self.say(m, text, room, ACTION)

    def topic(self, m: Member, text: str, room: Room | None = None) -> None:
        """C{/topic}: show the topic (no text), clear it (C{-}), or set it."""
        room = room or m.room
        if room is None:
            return
        text = text.strip()
        if not text:
            self.emit(m, RoomTopic(room.name, room.topic))
            return
        self.set_topic(m, room, "" if text == "-" else text)

    def set_topic(self, m: Member, room: Room, text: str) -> None:
        """Set C{room}'s topic to C{text} (empty: clear it), telling the room."""
        if self.cluster is not None and m.origin is None:
            self.cluster.topic(m, room, clip(text.strip(), REASON_MAX))
            return
        self.apply_topic(room, m.nick or "", text, self.clock.seconds())

    def apply_topic(self, room: Room, nick: str, text: str, at: float) -> None:
        room.topic = clip(text.strip(), REASON_MAX)
        room.topic_by, room.topic_at = nick, at
        self.to_room(room, Topic(room.name, nick, room.topic))

    def who(self, m: Member, room: Room | None = None) -> None:
        room = room or m.room
        if room is not None:
            self.emit(m, Roster(room))

    def room_list(self) -> list[Room]:
        """Every room: the configured ones in config order, then the others by name."""
        configured = [r for r in self.rooms.values() if r.configured]
        others = sorted((r for r in self.rooms.values() if not r.configured), key=lambda r: r.key)
        return configured + others

    def list_rooms(self, m: Member) -> None:
        self.emit(m, RoomList(tuple((r.name, len(r.members)) for r in self.room_list())))
