"""The sync engine: one pass over a room (`cycle`), carrying out a plan with a journal
(`executor`), settling writes a crash interrupted (`settle`), and the conflict store
(`conflicts`). May import every lower layer; never `syncd.service` or `syncd.commands`."""
