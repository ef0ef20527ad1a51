"""portal-admin: the operators' command line, a thin layer over the portal's operator commands (contracts only)."""
