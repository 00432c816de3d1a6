"""The Microsoft Graph sandbox: calendars over Graph and tokens over the identity platform,
on loopback TLS with a throwaway CA; `GraphSandbox` in `server`."""
