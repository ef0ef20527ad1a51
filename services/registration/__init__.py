"""registration: Product models, installed base, registered devices, warranty, bulk Excel registration (CATALOG §3)."""
