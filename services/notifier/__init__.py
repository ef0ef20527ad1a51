"""notifier: E-mail for every event above, in the recipient's language (CATALOG §7)."""
