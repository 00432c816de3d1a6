"""Room calendars: the `RoomCalendar` interface and its errors (`base`), and one
sub-package per backend (`ews`). May import `syncd.core`, `syncd.config`, `syncd.logs`
and `syncd.errors`; never the engine, the service or the commands."""
