"""EST (RFC 7030): enrollment over secure transport for devices.

``messages`` is the sans-I/O codec the device agent shares; ``routes`` the server's adapter
(import it from there: this package stays free of server imports).
"""
