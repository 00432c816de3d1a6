"""The Microsoft Graph backend (room mailboxes in Exchange Online), on httpx and MSAL: the
`RoomCalendar` implementation (`backend`), app-only tokens (`auth`), the transport with its
throttling and in-flight limit (`http`), the translation of events (`convert`) and the
change checks through calendarView/delta (`delta`). Imports core, config, errors and logs only."""
