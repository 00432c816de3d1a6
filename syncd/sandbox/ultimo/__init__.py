"""The Ultimo sandbox: the Reservations REST connector as documented, quirks, quota and
faults included (`server`)."""
