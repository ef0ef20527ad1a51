"""ticketing: Service requests and their life cycle (CATALOG §6)."""
