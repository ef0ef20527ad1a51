"""The portal's public surface: message schemas, error codes, topology names and the gateway client."""
