"""Key backends that hold CA private keys: encrypted files or a PKCS#11 token."""
