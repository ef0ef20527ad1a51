"""The HTTP gateway: every customer and operator command of the catalogue as a JSON web API (`python -m gateway`)."""
