"""The EWS backend (Exchange Server on premises, Exchange Online until EWS is retired),
on exchangelib: the `RoomCalendar` implementation (`backend`), the connection and its
credentials (`connect`), and the translation of calendar items (`convert`)."""
