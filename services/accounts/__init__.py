"""accounts: People, customers, contracts, sessions and access tokens (CATALOG §2)."""
