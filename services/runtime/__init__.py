"""What every service needs once: settings, topology, commands, events, outbox, tokens, Mongo."""
