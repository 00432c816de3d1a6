"""syncd: keeps Exchange room calendars and IFS Ultimo reservations in agreement."""

__version__ = "0.1.0"
