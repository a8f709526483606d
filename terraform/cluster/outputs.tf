output "ipv4" {
  description = "Each node's public IPv4 address, first server first."
  value       = hcloud_server.node[*].ipv4_address
}

output "private_ips" {
  description = "Each node's address on the private network."
  value       = local.private_ip
}

output "dns_records" {
  description = "Create these once at your DNS host: every node routes every app (or put a load balancer in front and point the wildcard at it)."
  value       = [for ip in hcloud_server.node[*].ipv4_address : "*.${var.domain}. 300 IN A ${ip}"]
}

output "next" {
  description = "Check the cluster once it is up."
  value       = "ssh root@${hcloud_server.node[0].ipv4_address} /opt/billowin/.venv/bin/billowin nodes"
}
