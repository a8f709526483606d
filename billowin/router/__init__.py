"""The router: HAProxy, configured by consul-template from the Consul catalog."""
