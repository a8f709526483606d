output "ipv4" {
  description = "The box's public IPv4 address."
  value       = hcloud_server.box.ipv4_address
}

output "ipv6" {
  description = "The box's public IPv6 address."
  value       = hcloud_server.box.ipv6_address
}

output "dns_records" {
  description = "Create these once at your DNS host: every app, and the API, answer under them."
  value = [
    "*.${var.domain}. 300 IN A ${hcloud_server.box.ipv4_address}",
    "*.${var.domain}. 300 IN AAAA ${hcloud_server.box.ipv6_address}",
  ]
}

output "next" {
  description = "What to do once the DNS records exist."
  value       = "ssh root@${hcloud_server.box.ipv4_address} cloud-init status --wait && ssh root@${hcloud_server.box.ipv4_address} /opt/billowin/.venv/bin/billowin tokens:create admin"
}
