"""Fakes of the outside systems, served on loopback so tests and the demo run the real
clients over real HTTP: `ultimo/`, `ews/`, `graph/` (Microsoft Graph and its identity
platform over TLS, on the EWS sandbox's store when both run), their shared HTTP server (`httpbase`) and
`syncd sandbox` (`serve`). Imported only by itself, `syncd.commands.demo` and tests."""
