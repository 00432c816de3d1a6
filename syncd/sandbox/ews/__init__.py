"""The EWS sandbox: a SOAP endpoint (`server`) over an in-memory mailbox store (`store`,
`model`), with NTLM/Basic/Bearer authentication (`auth`, `ntlm`), reads (`read`,
`restrict`, `render`), writes (`write`) and the SOAP envelope (`soap`, `ops`)."""
