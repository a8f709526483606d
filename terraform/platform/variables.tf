variable "nomad_address" {
  description = "Nomad's HTTP API, e.g. http://10.0.0.1:4646."
  type        = string
}

variable "nomad_token" {
  description = "A Nomad management token (it makes ACL policies)."
  type        = string
  sensitive   = true
  default     = null
}

variable "consul_address" {
  description = "Consul's HTTP API as host:port, e.g. 10.0.0.1:8500."
  type        = string
}

variable "consul_token" {
  description = "A Consul token with acl:write and key:write on the prefix (the bootstrap token)."
  type        = string
  sensitive   = true
  default     = null
}

variable "domain" {
  description = "Apps answer at <app>.<domain>: the wildcard DNS record points at the nodes."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every ACL policy and job this module makes (change it to apply beside an existing install)."
  type        = string
  default     = "billowin"
}

variable "datacenters" {
  description = "Nomad datacenters the router runs in (one instance on each client node)."
  type        = list(string)
  default     = ["*"]
}

variable "router_http_port" {
  description = "The port the router listens on for plain HTTP on every node."
  type        = number
  default     = 80
}

variable "router_stats_port" {
  description = "HAProxy's stats and /healthz, on 127.0.0.1 of each node."
  type        = number
  default     = 8404
}

variable "consul_dns_port" {
  description = "The Consul agent's DNS port on each node (HAProxy resolves the apps' instances there)."
  type        = number
  default     = 8600
}

variable "haproxy" {
  description = "HAProxy's binary on the nodes (Debian's package: /usr/sbin/haproxy)."
  type        = string
  default     = "/usr/sbin/haproxy"
}

variable "router_slots" {
  description = "Instances per app the router can send to (HAProxy server-template slots)."
  type        = number
  default     = 16
}
