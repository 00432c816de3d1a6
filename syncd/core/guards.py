"""The guard against a read that comes back empty where linked bookings were: such a room
is halted (not planned) rather than having every booking cancelled on the other side."""

from __future__ import annotations

from syncd.core.plan import RoomSnapshot

# A side emptied at once is taken for a bad read only when it would cancel at least this
# many linked bookings: one booking cancelled is indistinguishable from, and far more
# likely than, a broken read, and the cancellation cap still applies.
MASS_MINIMUM = 2


def mass_cancellation_reason(s: RoomSnapshot) -> str | None:
    """Why this room must not be planned (a read came back empty where bookings were), or None."""
    active = [lk for lk in s.links if lk.state == "active"]
    if s.exchange is not None and s.exchange_window is not None and (s.previous_exchange_count or 0) > 0:
        w = s.exchange_window
        if not any(w.overlaps(e.start, e.end) for e in s.exchange):
            at_risk = [lk for lk in active if (lk.exchange_key or lk.exchange_item_id) and w.overlaps(lk.start, lk.end)]
            if len(at_risk) >= MASS_MINIMUM:
                return (f"Exchange returned no bookings for {s.room.mailbox} (last read: "
                        f"{s.previous_exchange_count}); {len(at_risk)} linked booking(s) would be cancelled")
    if s.ultimo is not None and s.ultimo_window is not None and (s.previous_ultimo_count or 0) > 0:
        w = s.ultimo_window
        if not any(w.overlaps(r.start, r.end) for r in s.ultimo):
            at_risk = [lk for lk in active if lk.ultimo_id and w.contains(lk.start, lk.end)]
            if len(at_risk) >= MASS_MINIMUM:
                return (f"Ultimo returned no reservations for space {s.room.space_id} (last read: "
                        f"{s.previous_ultimo_count}); {len(at_risk)} linked booking(s) would be cancelled")
    return None
