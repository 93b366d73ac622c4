"""Protocol adapters: parse, authenticate, call the authority, encode. They never sign."""
