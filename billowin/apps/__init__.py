"""App records and API tokens, kept in Consul KV."""
