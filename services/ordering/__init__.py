"""ordering: Consumables catalogue per model, orders and shipping (CATALOG §5)."""
