"""Pure helpers with no socksvc imports: the daemon, the services and the client all use them."""
