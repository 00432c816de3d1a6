"""IFS Ultimo: the Reservations REST client (`client`), its wire format and quirks
(`wire`) and the call budget every request is counted against (`budget`). May import
`syncd.core`, `syncd.config`, `syncd.store`, `syncd.logs` and `syncd.errors`."""
