"""The database: SQLAlchemy tables (`schema`), engines, sessions and the schema version
(`db`). May import `syncd.core`, `syncd.config` and `syncd.errors`; never the engine,
the service or the commands."""
