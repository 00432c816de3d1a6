"""The long-running service: the scheduler (`daemon`), the Ultimo read plan and its pacing
(`readplan`, `pacer`, `bucket`), health and metrics (`health`), the instance lock (`lock`),
systemd notification (`sdnotify`) and its live state (`state`). May import the engine and
everything below it; never `syncd.commands`."""
