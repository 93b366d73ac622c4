"""The ``iotpki`` command line."""
