"""metering: Counters, meter readings, billing periods and reading reminders (CATALOG §4)."""
