"""Fakes of the outside systems, served on loopback: the Ultimo Reservations connector
(`syncd.sandbox.ultimo`), the EWS endpoint (`syncd.sandbox.ews`), and `syncd sandbox`
(`syncd.sandbox.serve`). They follow the documented behaviour and its quirks so tests and
the demo exercise the real clients over real HTTP."""
