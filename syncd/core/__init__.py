"""The pure core: bookings on both sides (`model`), the plan of actions (`plan`) and the
rules that make it (`planner`). No I/O: imports nothing of syncd but itself and
`syncd.errors`, and no HTTP, EWS, database or scheduler library."""
